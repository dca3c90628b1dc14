//! The methods measured (the letters of issue 5): their names, and one creation or one batch of each.
//!
//! - a: socketpair + fork + `_exit` + EOF + waitpid, from the caller;
//! - b: the floor template (`benches/floor.c`, built here): one byte plus
//!   an fd over `SCM_RIGHTS`, it forks, the child `_exit`s, we wait for EOF;
//!   b′: the same with 1,000 requests queued before the EOFs are awaited;
//!   b″: the same floor linked dynamically, as anyfork-serve must be to
//!   load libraries (the limit for a template that can);
//! - c: `Process::new()` + `run("anyfork_exit")`, wait for EOF on the comm
//!   socket, one at a time;
//! - d: the same with 1,000 creations queued, then all EOFs awaited
//!   (`ANYFORK_BENCH_INFLIGHT` can limit how many wait for their run
//!   callback at a time);
//! - e: `fork()` of a template made with `Process::new_exec()` that holds 2
//!   strings and 2 fds, plus 1 string after the fork, `run("anyfork_exit")`;
//! - f: `Process::new()` + `exec_detached(["/bin/true"])` (no run
//!   callback: the exit status is all it waits for), until the exit callback
//!   has /bin/true's wait status (the same end point as waitpid); the
//!   template spawns it (`posix_spawn`, see `src/server/spawn.rs`); f′: the
//!   same, but only until the comm socket's EOF, which comes when the exec
//!   closes it (program loaded, not run);
//! - f‴: the floor template asked to posix_spawn /bin/true and wait for
//!   it, then close the fd it was sent (the least a template can do to run
//!   a program for its caller);
//! - s: posix_spawn(/bin/true) + waitpid, from the caller;
//! - w: `fork()` + `run("anyfork_exit")` of a template keeping a warm pool
//!   of 2 children;
//! - c-lib: `fork()` of a template (forked from the default one) that
//!   required benches/grow.c's library, + `run("bench_hello")` there (it
//!   writes one byte and returns), wait for EOF (issue 18); c-lib′ the
//!   same from a second such template keeping 2 processes forked ahead
//!   (`fork_ahead`: the fork is off the creation's path);
//! - b-lib: its bare counterpart ([`crate::floor::BareLib`]): a copy of
//!   this program holding the same library receives one fd, forks, the
//!   child calls `bench_hello` and exits, children auto-reaped;
//! - fq: 1,000 `Process::new()` + `exec_detached(["/bin/true"])` queued at once,
//!   then all 1,000 exit reports awaited; sq: 1,000 `posix_spawn` of
//!   /bin/true from the caller, reaping in the same loop (issue 18: what
//!   an event loop can do without blocking). For f and s, the time spent
//!   inside the call (`Process::new` + `exec`, or `posix_spawn`) is the
//!   time a loop thread is blocked per spawn;
//! - g: latency p50/p99 of c (and b), and the caller's own CPU time
//!   (getrusage RUSAGE_SELF: user + sys, children excluded) per creation
//!   (see `measure.rs`).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyfork::Process;

use crate::floor::{BareLib, Floor};
use crate::sys::{check, drain, epoll_ctl, epoll_new, errno, pair, wait_eof, waitpid};

/// Creations queued at once by the pipelined methods.
pub const BATCH: usize = 1000;
/// Default limit on method d's creations waiting for their run callback:
/// none, all 1,000 are queued at once (issue 5's method). A limit (say
/// 128) keeps fewer fds in flight, which this machine runs a little faster.
pub const DEFAULT_WINDOW: usize = 0;
/// Epoll token of anyfork's loop fd in our own epoll set.
const LOOP_TOKEN: u64 = u64::MAX;
/// Children the template of method w keeps waiting.
const WARM: &[u8] = b"2";

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

// ---------------------------------------------------------------------------
// Run and exit callbacks land here (they fire only from anyfork::wait/dispatch).

static INBOX: Mutex<Vec<anyfork::Result<OwnedFd>>> = Mutex::new(Vec::new());

fn inbox() -> std::sync::MutexGuard<'static, Vec<anyfork::Result<OwnedFd>>> {
    INBOX.lock().unwrap_or_else(|p| p.into_inner())
}

/// The run callback of every creation: keeps the comm socket for
/// [`await_sock`] (or the pipelined method).
pub fn to_inbox(r: anyfork::Result<OwnedFd>) {
    inbox().push(r);
}

/// Turns the reactor until a run callback delivered a comm socket.
pub fn await_sock() -> OwnedFd {
    await_one(&INBOX, "run callback")
}

static EXITS: Mutex<Vec<anyfork::Result<i32>>> = Mutex::new(Vec::new());

fn exits() -> std::sync::MutexGuard<'static, Vec<anyfork::Result<i32>>> {
    EXITS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turns the reactor until an exit callback delivered a wait status.
fn await_exit() -> i32 {
    await_one(&EXITS, "exit callback")
}

/// Turns the reactor until a callback put a result into `queue`.
fn await_one<T>(queue: &Mutex<Vec<anyfork::Result<T>>>, what: &str) -> T {
    let take = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
    loop {
        if let Some(r) = take() {
            return ok(r, what);
        }
        let ran = ok(anyfork::wait(-1), "anyfork::wait");
        if ran == 0 && anyfork::pending() == 0 {
            if let Some(r) = take() {
                return ok(r, what);
            }
            panic!("anyfork::wait: no callback is waiting, yet no {what} delivered");
        }
    }
}

/// The value of an anyfork call, or a panic naming the call.
pub fn ok<T>(r: anyfork::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

// ---------------------------------------------------------------------------
// Methods

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum M {
    A,
    B,
    Bq,
    Bd,
    C,
    D,
    E,
    F,
    Fx,
    Fs,
    S,
    W,
    Cl,
    Ca,
    Bl,
    Fq,
    Sq,
}

pub const METHODS: [M; 17] = [
    M::A,
    M::B,
    M::Bq,
    M::Bd,
    M::C,
    M::D,
    M::E,
    M::F,
    M::Fx,
    M::Fs,
    M::S,
    M::W,
    M::Cl,
    M::Ca,
    M::Bl,
    M::Fq,
    M::Sq,
];

impl M {
    /// Its key in the JSON file.
    pub fn key(self) -> &'static str {
        match self {
            M::A => "a_fork",
            M::B => "b_floor",
            M::Bq => "b_floor_pipelined",
            M::Bd => "b_floor_dynamic",
            M::C => "c_anyfork",
            M::D => "d_anyfork_pipelined",
            M::E => "e_template_fork",
            M::F => "f_exec_true",
            M::Fx => "f_exec_true_eof_at_exec",
            M::Fs => "floor_spawn_true",
            M::S => "posix_spawn_true",
            M::W => "w_warm_pool",
            M::Cl => "c_lib_fork_run",
            M::Ca => "c_lib_forked_ahead",
            M::Bl => "b_lib_bare_template",
            M::Fq => "exec_true_1000_queued",
            M::Sq => "posix_spawn_true_1000_loop",
        }
    }

    /// Its name for `--only`.
    pub fn letter(self) -> &'static str {
        match self {
            M::A => "a",
            M::B => "b",
            M::Bq => "bq",
            M::Bd => "bd",
            M::C => "c",
            M::D => "d",
            M::E => "e",
            M::F => "f",
            M::Fx => "fx",
            M::Fs => "fs",
            M::S => "s",
            M::W => "w",
            M::Cl => "c-lib",
            M::Ca => "c-lib-ahead",
            M::Bl => "b-lib",
            M::Fq => "fq",
            M::Sq => "sq",
        }
    }

    /// Its row in the table; `window` is [`crate::config::Config::window`].
    pub fn label(self, window: usize) -> String {
        if self == M::D && window > 0 && window < BATCH {
            return format!("d. anyfork, 1,000 per batch, ≤ {window} in flight");
        }
        let s = match self {
            M::A => "a. socketpair+fork+_exit+EOF+waitpid",
            M::B => "b. floor template (static C)",
            M::Bq => "b′. floor template, 1,000 queued",
            M::Bd => "b″. floor template linked dynamically",
            M::C => "c. anyfork new+run(anyfork_exit)",
            M::D => "d. anyfork, 1,000 queued",
            M::E => "e. fork of a prepared template (2 str + 2 fd, +1 str)",
            M::F => "f. anyfork exec_detached /bin/true, until its exit report",
            M::Fx => "f′. anyfork exec /bin/true (EOF at exec)",
            M::Fs => "f‴. floor template: posix_spawn /bin/true, wait, EOF",
            M::S => "posix_spawn /bin/true + waitpid",
            M::W => "w. warm pool of 2: fork+run(anyfork_exit)",
            M::Cl => "c-lib. fork of a template holding a library + run of a function there",
            M::Ca => "c-lib′. the same with 2 processes forked ahead (`fork_ahead`)",
            M::Bl => "b-lib. bare template holding that library (fork of this program)",
            M::Fq => "fq. anyfork exec_detached /bin/true, 1,000 queued, until their exit reports",
            M::Sq => "sq. posix_spawn /bin/true, 1,000 in a loop with reaping",
        };
        s.to_string()
    }

    /// Measured [`BATCH`] creations at a time ([`Ctx::batch`]).
    pub fn pipelined(self) -> bool {
        matches!(self, M::Bq | M::D | M::Fq | M::Sq)
    }

    /// Each creation timed, for latencies and phases.
    pub fn timed(self) -> bool {
        matches!(
            self,
            M::B | M::Bd | M::C | M::W | M::Cl | M::Ca | M::Bl | M::F | M::S
        )
    }
}

/// What the methods run on: the templates, and the epoll sets of the
/// pipelined methods.
pub struct Ctx {
    /// benches/grow.c, built: makes a template as large as the caller.
    pub grow: PathBuf,
    pub floor: Floor,
    /// The floor template linked dynamically (method b″).
    floor_dyn: Floor,
    /// The template of method e: a fresh anyfork-serve with 2 strings and
    /// 2 fds queued before every fork.
    pub tmpl: Process,
    /// The template of method w: a fresh anyfork-serve keeping a warm
    /// pool (`anyfork_warm`).
    warm: Process,
    /// The template of method c-lib: forked from the default template,
    /// holding benches/grow.c's library.
    tlib: Process,
    /// The template of method c-lib′: like `tlib`, keeping 2 processes
    /// forked ahead.
    tlib_ahead: Process,
    /// The bare template of method b-lib.
    bare: Option<BareLib>,
    /// Epoll set of the pipelined anyfork method: anyfork's loop fd plus
    /// the comm sockets not at EOF yet.
    ep_any: OwnedFd,
    /// Epoll set of the pipelined floor method.
    ep_floor: OwnedFd,
    /// Sockets being watched for EOF, by fd number.
    open: HashMap<RawFd, OwnedFd>,
    /// See [`crate::config::Config::window`].
    window: usize,
    /// When the last timed creation was submitted (its calls returned)
    /// and when its comm socket was in hand (b: at once).
    pub marks: [Option<Instant>; 2],
}

impl Ctx {
    pub fn new(out_dir: &Path, window: usize, grow: PathBuf, bare: BareLib) -> Ctx {
        let floor = Floor::start(out_dir, false);
        let floor_dyn = Floor::start(out_dir, true);
        let mut tmpl = ok(Process::new_exec(), "Process::new_exec");
        ok(tmpl.send_arg(b"string one"), "send_arg");
        ok(tmpl.send_arg(b"string two"), "send_arg");
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        ok(tmpl.send_fd(null.as_fd()), "send_fd");
        let (x, _y) = pair(false);
        ok(tmpl.send_fd(x.as_fd()), "send_fd");
        let mut warm = ok(Process::new_exec(), "Process::new_exec");
        ok(warm.eval("anyfork_warm", &[WARM]), "eval anyfork_warm");
        let mut tlib = ok(Process::new(), "Process::new");
        ok(tlib.require(&grow.display().to_string()), "require");
        let mut tlib_ahead = ok(Process::new(), "Process::new");
        ok(tlib_ahead.require(&grow.display().to_string()), "require");
        ok(tlib_ahead.fork_ahead(2), "fork_ahead");
        let ep_any = epoll_new();
        epoll_ctl(
            &ep_any,
            libc::EPOLL_CTL_ADD,
            ok(anyfork::loop_fd(), "loop_fd"),
            LOOP_TOKEN,
        );
        Ctx {
            grow,
            floor,
            floor_dyn,
            tmpl,
            warm,
            tlib,
            tlib_ahead,
            bare: Some(bare),
            ep_any,
            ep_floor: epoll_new(),
            open: HashMap::new(),
            window,
            marks: [None; 2],
        }
    }

    /// One sequential creation, start to EOF.
    pub fn once(&mut self, m: M) {
        match m {
            M::A => {
                let (ours, theirs) = pair(true);
                // SAFETY: the child calls only _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: async-signal-safe, never returns.
                    unsafe { libc::_exit(0) };
                }
                check(pid, "fork");
                drop(theirs);
                wait_eof(ours.as_raw_fd());
                waitpid(pid);
            }
            M::B | M::Bd => {
                let floor = if m == M::B {
                    &self.floor
                } else {
                    &self.floor_dyn
                };
                let ours = floor.ask(b"F");
                self.marks = [Some(Instant::now()); 2];
                wait_eof(ours.as_raw_fd());
            }
            M::C | M::W => {
                let p = if m == M::C {
                    ok(Process::new(), "Process::new")
                } else {
                    ok(self.warm.fork(), "Process::fork")
                };
                ok(p.run("anyfork_exit", to_inbox), "run");
                self.marks[0] = Some(Instant::now());
                let sock = await_sock();
                self.marks[1] = Some(Instant::now());
                wait_eof(sock.as_raw_fd());
            }
            M::E => {
                let mut p = ok(self.tmpl.fork(), "Process::fork");
                ok(p.send_arg(b"string three"), "send_arg");
                ok(p.run("anyfork_exit", to_inbox), "run");
                wait_eof(await_sock().as_raw_fd());
            }
            M::F => {
                let mut p = ok(Process::new(), "Process::new");
                p.on_exit(|_, st| exits().push(st));
                ok(p.exec_detached(&[b"/bin/true"], None), "exec_detached");
                self.marks[0] = Some(Instant::now());
                let st = await_exit();
                assert_eq!(st, 0, "/bin/true ended with wait status {st:#x}");
            }
            M::Fx => {
                let p = ok(Process::new(), "Process::new");
                ok(p.exec(&[b"/bin/true"], None, to_inbox), "exec");
                wait_eof(await_sock().as_raw_fd());
            }
            M::Fs => {
                let ours = self.floor.ask(b"S");
                wait_eof(ours.as_raw_fd());
            }
            M::S => {
                let pid = spawn_true();
                self.marks[0] = Some(Instant::now());
                waitpid(pid);
            }
            M::Cl | M::Ca => {
                let t = if m == M::Cl {
                    &self.tlib
                } else {
                    &self.tlib_ahead
                };
                let p = ok(t.fork(), "Process::fork");
                ok(p.run("bench_hello", to_inbox), "run");
                self.marks[0] = Some(Instant::now());
                let sock = await_sock();
                self.marks[1] = Some(Instant::now());
                wait_eof(sock.as_raw_fd());
            }
            M::Bl => {
                let ours = self.bare.as_ref().expect("bare template").ask();
                self.marks = [Some(Instant::now()); 2];
                wait_eof(ours.as_raw_fd());
            }
            M::Bq | M::D | M::Fq | M::Sq => unreachable!("pipelined"),
        }
    }

    /// Watches `fd` for EOF in `ep` (level-triggered, so an EOF that came
    /// already is reported at once).
    fn watch(open: &mut HashMap<RawFd, OwnedFd>, ep: &OwnedFd, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        epoll_ctl(ep, libc::EPOLL_CTL_ADD, raw, raw as u64);
        open.insert(raw, fd);
    }

    /// BATCH creations queued, then every EOF awaited. For anyfork, at most
    /// `self.window` creations wait for their run callback at any time (0:
    /// no limit, the literal method); see `ANYFORK_BENCH_INFLIGHT`.
    pub fn batch(&mut self, m: M) {
        if m == M::Fq {
            for _ in 0..BATCH {
                let mut p = ok(Process::new(), "Process::new");
                p.on_exit(|_, st| exits().push(st));
                ok(p.exec_detached(&[b"/bin/true"], None), "exec_detached");
            }
            for _ in 0..BATCH {
                let st = await_exit();
                assert_eq!(st, 0, "/bin/true ended with wait status {st:#x}");
            }
            return;
        }
        if m == M::Sq {
            // Children exit about in the order they were spawned: the loop
            // reaps the oldest ones that are done after each spawn.
            let mut live = std::collections::VecDeque::with_capacity(BATCH);
            for _ in 0..BATCH {
                live.push_back(spawn_true());
                while let Some(&pid) = live.front() {
                    let mut st = 0;
                    // SAFETY: our own child, a valid status pointer.
                    if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } != pid {
                        break;
                    }
                    live.pop_front();
                }
            }
            for pid in live {
                waitpid(pid);
            }
            return;
        }
        let mut done = 0;
        let (mut queued, mut got) = (0, 0);
        if m == M::Bq {
            for _ in 0..BATCH {
                let ours = self.floor.ask(b"F");
                Self::watch(&mut self.open, &self.ep_floor, ours);
            }
        }
        let ep = if m == M::D {
            &self.ep_any
        } else {
            &self.ep_floor
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        while done < BATCH {
            if m == M::D {
                let ready: Vec<_> = inbox().drain(..).collect();
                for r in ready {
                    Self::watch(&mut self.open, ep, ok(r, "run callback"));
                    got += 1;
                }
                while queued < BATCH && (self.window == 0 || queued - got < self.window) {
                    let p = ok(Process::new(), "Process::new");
                    ok(p.run("anyfork_exit", to_inbox), "run");
                    queued += 1;
                }
            }
            // SAFETY: the buffer holds 64 events.
            let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), 64, -1) };
            if n < 0 {
                assert_eq!(errno(), libc::EINTR, "epoll_wait");
                continue;
            }
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if token == LOOP_TOKEN {
                    ok(anyfork::dispatch(), "anyfork::dispatch");
                    continue;
                }
                let raw = token as RawFd;
                if drain(raw) {
                    epoll_ctl(ep, libc::EPOLL_CTL_DEL, raw, 0);
                    self.open.remove(&raw);
                    done += 1;
                }
            }
        }
    }

    /// Orderly end: the templates see EOF and exit.
    pub fn close(self) {
        let Ctx {
            floor, tmpl, bare, ..
        } = self;
        drop(tmpl);
        floor.stop();
        if let Some(b) = bare {
            b.stop();
        }
        let _ = anyfork::dispatch();
    }
}

/// posix_spawn of /bin/true from the caller, with the process environment;
/// the child's pid. glibc returns once the child has exec'd.
fn spawn_true() -> libc::pid_t {
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let mut pid = 0;
    // SAFETY: NULL-terminated argv and the process environment.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr() as *const *mut libc::c_char,
            environ as *const *mut libc::c_char,
        )
    };
    assert_eq!(
        rc,
        0,
        "posix_spawn: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    pid
}
