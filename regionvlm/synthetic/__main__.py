from regionvlm.synthetic.world import main

main()
