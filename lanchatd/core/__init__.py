"""The shared sans-IO core: wire formats, text rules and words, used by the daemon, the
chat client, lanchatctl and the tests. It opens no sockets, starts no threads, reads no clocks."""
