"""``python -m lift_integrations.commands``: the ``lift`` command without the installed script."""

import sys

from lift_integrations.commands import main

sys.exit(main())
