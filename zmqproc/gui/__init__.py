"""The PySide6 desktop viewer: a thin client whose replies arrive on a QSocketNotifier."""
