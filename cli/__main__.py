"""`python -m fc`: the same as the `fc` command (which bash and zsh shadow with a builtin)."""

from fc.main import main

main()
