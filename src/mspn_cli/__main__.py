from mspn_cli.cli import main

main()
