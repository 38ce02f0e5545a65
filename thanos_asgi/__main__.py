from thanos_asgi.cli import main

raise SystemExit(main())
