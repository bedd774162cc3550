// bench-xmpp: see bench/README.md
