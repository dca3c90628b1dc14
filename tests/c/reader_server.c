/* A custom template server for tests/server_reader.rs: serves the socket
 * in ANYFORK_FD with fork_serve (a server that may run threads). */
#include <anyfork.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const char *fd = getenv("ANYFORK_FD");
    if (!fd) {
        fputs("reader_server: ANYFORK_FD is not set\n", stderr);
        return 2;
    }
    int rc = fork_serve(atoi(fd));
    fprintf(stderr, "reader_server: fork_serve: %d %s\n", rc, fork_last_error());
    return 1;
}
