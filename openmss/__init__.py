"""OpenMSS shared core: settings, database, audit trail, crypto, command line.

The service packages (``mailserver``, ``directory``, ``dossier_bridge``, ``webmail``) build on
this core and never on each other's internals.
"""

__version__ = "0.1.0"
