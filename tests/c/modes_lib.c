/*
 * Run functions for tests/modes.rs, loaded with fork_require into
 * anyfork-serve (or into a process of it): built without -lanyfork, the
 * server exports fork_child_args.
 *
 *   modes_report: writes the common report (modes_util.h) on the comm
 *                 socket and "arg <i> from <pid>" into every fd argument;
 *   modes_status: exits with the number in its last string argument.
 */
#include "modes_util.h"

int modes_report(int fd, const fork_arg *args, size_t nargs);
int modes_report(int fd, const fork_arg *args, size_t nargs)
{
    return mu_report_args(fd, args, nargs);
}

int modes_status(int fd, const fork_arg *args, size_t nargs);
int modes_status(int fd, const fork_arg *args, size_t nargs)
{
    (void)fd;
    for (size_t i = nargs; i-- > 0;)
        if (args[i].kind == FORK_ARG_STRING)
            return atoi((const char *)args[i].data);
    return 99;
}
