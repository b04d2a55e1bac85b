from holdgate.cli import main

main()
