"""Derive the package list from the folders so nothing drops out of the wheel.

setuptools' `package-dir` maps the user's top-level folders (stream/, models/,
policies/) under the `holdgate` import root; `find_packages` on each folder
adds every nested subpackage with the right dotted name.
"""
from setuptools import find_namespace_packages, setup

ROOTS = {"holdgate": "holdgate", "holdgate.stream": "stream",
         "holdgate.models": "models", "holdgate.policies": "policies"}

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in ROOTS.items():
    packages.append(name)
    package_dir[name] = folder
    # Namespace discovery also lists data-only folders (schemas/, policies/default/...),
    # so setuptools ships their files instead of warning that it would ignore them.
    for sub in find_namespace_packages(folder, exclude=["*__pycache__*"]):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
