from ipvsctl.entry import main

main()
