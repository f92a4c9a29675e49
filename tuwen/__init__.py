"""tuwen (图文): the roof. The console script and the demo orchestration; nothing imports this package."""
