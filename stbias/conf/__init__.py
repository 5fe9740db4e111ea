"""The Hydra configs of stbias (a package, so that the installed command finds them)."""
