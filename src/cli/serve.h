/*
 * serve.h — `continual serve`: a worker of a pool that serves the live streams of one model over
 * NATS JetStream (docs/serve.md). Built only when libnats is found (CMake CO_NATS).
 */
#ifndef CO_CLI_SERVE_H
#define CO_CLI_SERVE_H

/* argv[1] is "serve". Returns the process exit status: 0 after a clean shutdown (SIGTERM/SIGINT,
 * or --setup done), 1 on a failure (message on stderr), 2 on bad usage. */
int co_cli_serve(int argc, char **argv);

#endif
