"""Renderers: a command builds one report document (``document``), and one renderer per format (``text``,
``markdown``, ``json``, ``jira``; chosen in ``formats``) presents it; they never decide anything."""
