"""Renderers: present a diagnosis as text (rich), Markdown or JSON; they never decide anything."""
