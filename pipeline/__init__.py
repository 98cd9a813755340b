"""The stage layer: the functions the CLI (`eps`) and dvc.yaml call; `eps` (the library) never imports it."""
