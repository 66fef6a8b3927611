from coexist.cli import main

main()
