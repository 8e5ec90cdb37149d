from gitd.cli import main

raise SystemExit(main())
