import sys

from companion.app.quick import main

sys.exit(main())
