"""``python -m demo``: serve the three demo systems (see ``demo.servers.main``)."""

from demo.servers import main

raise SystemExit(main())
