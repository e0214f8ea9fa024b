"""One module per subcommand: thin composition of config, collect, diagnose and render."""
