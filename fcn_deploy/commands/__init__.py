"""Sub-commands of ``fcn-deploy``; see :mod:`fcn_deploy.cli`."""
