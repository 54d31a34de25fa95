from wsmon.cli.main import main

main()
