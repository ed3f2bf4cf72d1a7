from membraind.cli import main

raise SystemExit(main())
