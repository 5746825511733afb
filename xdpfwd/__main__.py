from xdpfwd.launch import main

main()
