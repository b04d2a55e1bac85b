"""`holdgate keys generate|show`: Ed25519 key pairs for the worker, operators and approvers."""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """Make and inspect signing keys (no shared secrets: private keys stay where they sign)."""


@keys.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              default=Path(".holdgate/keys"), show_default=True,
              help="Folder to write <name>.key (mode 600) and <name>.pub into.")
@click.option("--name", default="worker", show_default=True,
              help="worker (signs verdicts), operator (control, publishes) or an approver name.")
def generate(directory: Path, name: str) -> None:
    """Write a new Ed25519 pair; refuses to overwrite an existing private key.

    \b
    Give the private key to the one process that signs with it
    (worker: HOLDGATE_SIGNING_KEY_FILE) and the public key to everyone who
    verifies (runtimes and executors: HOLDGATE_TRUSTED_KEYS).
    """
    from holdgate.keys import generate_keypair

    private, public, key_id = generate_keypair(directory, name)
    click.echo(f"{key_id}\n  private {private} (mode 600: keep it where it signs)\n"
               f"  public  {public} (give it to whoever verifies)")


@keys.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True))
def show(paths: tuple[Path, ...]) -> None:
    """Print the key id of public key files (or of every *.pub in a folder)."""
    from holdgate.keys import TrustStore

    for key_id in TrustStore.from_paths(paths).key_ids:
        click.echo(key_id)
