from auditsvc.cli import main

raise SystemExit(main())
