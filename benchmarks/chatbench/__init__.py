"""chatbench: lanchatd against ncat --chat on loopback; see docs/performance.md."""
