from bananagate.cli import main

main()
