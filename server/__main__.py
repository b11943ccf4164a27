"""`python -m server` runs `flowtel serve`."""

from server.cli import main

main(["serve", *__import__("sys").argv[1:]])
