# frozen_string_literal: true

require "rbconfig"
require "socket"
require_relative "anyfork/lib"
require_relative "anyfork/child"

# A process that has not run yet, made without forking this interpreter: a
# small template server forks it on request (libanyfork, through the ffi
# gem). Commands queue on it in order and return it, so they chain:
#
#   AnyFork.new.send_io($stdout).send_arg("x").run("fn") { |io| ... }
#   AnyFork.wait
#
# Ways to make one: AnyFork.new (forked from the default template),
# AnyFork.new_exec (a fresh anyfork-serve), AnyFork.template (a copy of this
# interpreter: run and eval then call Ruby methods), AnyFork.new_ruby (a
# fresh Ruby interpreter as template server), and #fork of any of them.
#
# #run and #exec consume the process. With a block they return at once and
# the block gets the comm socket (a UNIXSocket, yours to close) later, from
# AnyFork.wait or AnyFork.dispatch; without one they wait for it and return
# it. Failures raise AnyFork::Error with the library's message
# (fork_last_error). A process dropped without #run is freed by the garbage
# collector: the library delivers what was queued, then the process exits.
class AnyFork
  # A failed call: the message is libanyfork's (what was called, on what,
  # and why); errno the positive errno number, when known.
  class Error < StandardError
    attr_reader :errno

    def initialize(message = nil, errno = nil)
      super(message)
      @errno = errno
    end
  end

  # How a process ended, for #on_exit: like Process::Status. When the
  # status cannot be known (the template died first, a host loop reaped a
  # direct child, the callback was replaced) to_i is nil and error says why.
  class Status
    attr_reader :pid, :error

    def initialize(pid, wait_status, error = nil)
      @pid = pid
      @status = wait_status
      @error = error
    end

    def to_i = @status
    def exited? = !@status.nil? && (@status & 0x7f).zero?
    def exitstatus = exited? ? (@status >> 8) & 0xff : nil
    def signaled? = !@status.nil? && !exited? && (@status & 0x7f) != 0x7f
    def termsig = signaled? ? @status & 0x7f : nil
    def success? = exited? ? exitstatus.zero? : nil

    def inspect
      what = if error then "unknown: #{error.message}"
             elsif exited? then "exit #{exitstatus}"
             elsif signaled? then "signal #{termsig}"
             else "status #{@status}"
             end
      "#<AnyFork::Status pid #{pid} #{what}>"
    end
    alias to_s inspect
  end

  # Callbacks waiting for the library: id => block. The id travels as the
  # callback's userdata.
  @callbacks = {}
  @next_id = 0
  @lock = Mutex.new
  # Signalled (under @lock) when a blocking run's callback delivered, or a
  # thread left the library's dispatch.
  @delivered = ConditionVariable.new
  # Threads inside fork_wait or fork_loop_dispatch: a callback the library
  # counts as run may still be on its way to Ruby in one of them.
  @dispatching = 0

  class << self
    # Spawns a fresh anyfork-serve (a direct child: #pid is known at once).
    def new_exec
      adopt(Lib.fork_new_exec)
    end

    # Forks this interpreter now, with Ruby's own fork (Process._fork,
    # through the library's fork hook), as Kernel#fork would: the copy
    # keeps this program's fds and Ruby's signal handlers. The copy is a
    # template: its processes (#fork), made by Process._fork too, run Ruby
    # methods by name, "Mod::Klass.method" or a top-level "method", called
    # as method(comm_socket, *args) for #run and method(*args) for #eval,
    # with everything this program had prepared in memory. Call it while
    # the program has one thread.
    #
    # warm: how many children the template keeps forked and waiting, each
    # handed the next #fork at once (the warm pool, the builtin eval
    # anyfork_warm; 0 to 64, 0: none). The default of 2 takes the
    # template's fork off each creation's path (bench/fork_bench.rb:
    # creations 1.2 to 1.7 times as fast, p50 23 to 31 % shorter); the
    # waiting children cost two idle processes sharing the template's
    # memory.
    #
    # ahead: how many children of the template this process keeps forked
    # ahead (#fork_ahead; 0 to 64, 0: none): #fork hands one out, so neither
    # a fork nor a wake-up of the template is on a creation's path. The
    # default of 2, on top of the warm pool, costs two more idle processes.
    def template(warm: 2, ahead: 2)
      unless warm.is_a?(Integer) && (0..64).cover?(warm)
        raise ArgumentError, "template: warm is the number of waiting children, 0 to 64, not #{warm.inspect}"
      end
      unless ahead.is_a?(Integer) && (0..64).cover?(ahead)
        raise ArgumentError, "template: ahead is the number of processes forked ahead, 0 to 64, not #{ahead.inspect}"
      end

      Child.install
      t = adopt(Lib.fork_template_flags(Lib::FORK_TEMPLATE_KEEP_FDS))
      t.eval("anyfork_warm", warm.to_s) if warm.positive?
      ahead.positive? ? t.fork_ahead(ahead) : t
    end

    # Spawns a fresh Ruby interpreter as template server (lib/anyfork/
    # server.rb through fork_new_exec_argv): its processes run Ruby methods
    # as in ::template. Load code into it with #ruby_require. ruby_options
    # go to ruby before the script (e.g. "-I", dir).
    def new_ruby(*ruby_options)
      server = File.join(__dir__, "anyfork", "server.rb")
      argv = [RbConfig.ruby, *ruby_options.map(&:to_s), server]
      adopt(Lib.fork_new_exec_argv(strv(argv)))
    end

    # A template on another machine: argv's stdin and stdout must reach
    # `anyfork-serve --stdio` there, e.g. AnyFork.new_remote("ssh", "-o",
    # "BatchMode=yes", "host", "anyfork-serve", "--stdio"). Blocks for the
    # login; raises AnyFork::Error (ECONNREFUSED) saying why a start failed.
    # Its processes run C functions of libraries required there and the
    # builtins (for Ruby there, see ::new_remote_ruby); #send_io raises
    # (EOPNOTSUPP: fds cannot cross machines); the rest works as locally,
    # with the remote pids.
    def new_remote(*argv)
      adopt(Lib.fork_new_remote(strv(argv.map(&:to_s))))
    end

    # A Ruby interpreter serving as a template on another machine (this
    # gem installed there): argv ends in `anyfork-serve --stdio`, as for
    # ::new_remote; processes run Ruby methods as with ::new_ruby. ruby:
    # the interpreter there, with options (e.g. ["ruby", "-I", dir]).
    def new_remote_ruby(*argv, ruby: "ruby")
      new_remote(*argv, "--", *Array(ruby), "-e", 'require "anyfork/server"')
    end

    # Runs callbacks until every registered one has run, or timeout
    # seconds passed (nil: no limit). Returns how many ran. An exception
    # raised by a callback comes out of here.
    def wait(timeout = nil)
      deadline = timeout && now + timeout
      total = 0
      loop do
        left = deadline ? [((deadline - now) * 1000).ceil, 0].max : nil
        n = wait_slice(left)
        total += n
        raise_callback_error
        break if Lib.fork_pending.zero?
        break if n.zero? && left && left <= SLICE_MS
      end
      total
    end

    # Does the work that can be done now, without blocking; runs the
    # callbacks that are due. For event loops watching ::loop_io.
    def dispatch
      n = check(in_dispatch { Lib.fork_loop_dispatch })
      raise_callback_error
      n
    end

    # The library's one pollable fd, as an IO: readable while ::dispatch
    # has work. It belongs to the library (never close it).
    def loop_io
      fd = check(Lib.fork_loop_fd)
      @loop_io = nil if @loop_io && @loop_io_pid != Process.pid
      @loop_io_pid = Process.pid
      @loop_io ||= IO.for_fd(fd, autoclose: false)
    end

    # The number of run and exit callbacks not run yet.
    def pending
      Lib.fork_pending
    end

    # --- for AnyFork itself ---------------------------------------------

    # Raises AnyFork::Error for a negative return value.
    def check(rc)
      return rc unless rc.negative?

      raise Error.new(Lib.fork_last_error, -rc)
    end

    # An AnyFork that owns ptr (from a call returning a pointer), or the
    # library's error.
    def adopt(ptr)
      raise last_error if ptr.null?

      allocate.tap { |p| p.__send__(:own, ptr) }
    end

    # The library's last failure on this thread, for calls that return a
    # pointer or a pid.
    def last_error
      errno = -Lib.fork_last_errno
      Error.new(Lib.fork_last_error, errno.positive? ? errno : nil)
    end

    # The finalizer of handles made in this process; copies of the handle
    # in forked processes leave it alone.
    def releaser
      owner = Process.pid
      ->(ptr) { Lib.fork_free(ptr) if Process.pid == owner }
    end

    # A NULL-terminated char*[] (kept alive by the returned pointer).
    def strv(strings)
      bufs = strings.map { |s| FFI::MemoryPointer.from_string(cstr(s)) }
      arr = FFI::MemoryPointer.new(:pointer, bufs.size + 1)
      bufs.each_with_index { |b, i| arr.put_pointer(i * FFI::Pointer.size, b) }
      arr.put_pointer(bufs.size * FFI::Pointer.size, nil)
      arr.instance_variable_set(:@strings, bufs)
      arr
    end

    def cstr(s)
      s = s.to_s
      raise ArgumentError, "#{s.inspect} contains a NUL byte" if s.include?("\0")

      s
    end

    def register(block)
      @lock.synchronize do
        @next_id += 1
        @callbacks[@next_id] = block
        @next_id
      end
    end

    def unregister(id)
      @lock.synchronize { @callbacks.delete(id) }
    end

    # Starts a run or exec: yields the callback and its userdata to the C
    # call. With a block, returns nil and the block gets (io, error) later;
    # without, waits and returns the IO (or raises).
    def start(block)
      box = nil
      id = register(block || lambda { |io, err|
        @lock.synchronize do
          box = [io, err]
          @delivered.broadcast
        end
      })
      rc = begin
        yield RUN_CB, FFI::Pointer.new(id)
      rescue Exception # rubocop:disable Lint/RescueException
        unregister(id)
        raise
      end
      if rc.negative?
        unregister(id)
        check(rc)
      end
      return nil if block

      until await_delivery { box }
        wait_slice(nil)
        raise_callback_error
      end
      raise box[1] if box[1]

      box[0]
    end

    private

    # fork_wait blocks outside the interpreter, where signals (Ctrl-C,
    # Timeout) cannot reach Ruby: it waits in slices of this many ms.
    SLICE_MS = 100

    # One fork_wait of at most SLICE_MS (ms nil: the whole slice).
    def wait_slice(ms)
      check(in_dispatch { Lib.fork_wait(ms ? [ms, SLICE_MS].min : SLICE_MS) })
    end

    # Counts the threads in a call that runs callbacks.
    def in_dispatch
      @lock.synchronize { @dispatching += 1 }
      begin
        yield
      ensure
        @lock.synchronize do
          @dispatching -= 1
          @delivered.broadcast
        end
      end
    end

    # For a blocking run: true once its callback delivered (the block
    # says). When the library has no callback left to run, another thread
    # took this one and is about to call it (it waits for the GVL): wait
    # for that, up to a slice. With no such thread, the callback is gone.
    def await_delivery
      @lock.synchronize do
        return true if yield
        return false if Lib.fork_pending.positive?
        raise Error, "the library dropped the callback of this process" if @dispatching.zero?

        @delivered.wait(@lock, SLICE_MS / 1000.0)
        yield
      end
    end

    # In the child of Kernel#fork (Process._fork): the library forgets the
    # parent's sockets, templates and callbacks (fork_reset_after_fork),
    # and so does this class. Handles inherited from the parent fail with
    # EBADF from then on.
    def after_kernel_fork
      Lib.fork_reset_after_fork
      @callbacks = {}
      @lock = Mutex.new
      @delivered = ConditionVariable.new
      @dispatching = 0
      @loop_io = nil
      Thread.current[:anyfork_raised] = nil
    end

    def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

    def raise_callback_error
      errs = Thread.current[:anyfork_raised]
      raise errs.shift if errs && !errs.empty?
    end

    def callback_failed(err)
      (Thread.current[:anyfork_raised] ||= []) << err
    end

    # Blocks take what they name; lambdas exactly their arity.
    def call_block(block, *args)
      if block.lambda? && block.arity >= 0
        block.call(*args.first(block.arity))
      else
        block.call(*args)
      end
    end

    def run_done(id, fd)
      block = unregister(id) or return
      if fd >= 0
        call_block(block, UNIXSocket.for_fd(fd), nil)
      else
        call_block(block, nil, Error.new(Lib.fork_last_error, -fd))
      end
    rescue Exception => e # rubocop:disable Lint/RescueException
      callback_failed(e)
    end

    def exit_done(id, pid, status)
      block = unregister(id) or return
      st = if status.negative?
             Status.new(pid, nil, Error.new(Lib.fork_last_error, -status))
           else
             Status.new(pid, status)
           end
      call_block(block, pid, st)
    rescue Exception => e # rubocop:disable Lint/RescueException
      callback_failed(e)
    end
  end

  # Ruby 3.1's Kernel#fork, Process.fork and IO.popen("-") all fork
  # through Process._fork: the child resets anyfork there.
  module ForkHook
    def _fork
      pid = super
      AnyFork.__send__(:after_kernel_fork) if pid.zero?
      pid
    end
  end
  Process.singleton_class.prepend(ForkHook) if Process.respond_to?(:_fork)

  RUN_CB = FFI::Function.new(:void, %i[int pointer]) do |fd, ud|
    AnyFork.__send__(:run_done, ud.address, fd)
  end
  EXIT_CB = FFI::Function.new(:void, %i[pid_t int pointer]) do |pid, status, ud|
    AnyFork.__send__(:exit_done, ud.address, pid, status)
  end

  # Forks a process from the default template (spawned on first use).
  def initialize
    ptr = Lib.fork_new
    raise AnyFork.last_error if ptr.null?

    own(ptr)
  end

  # Forks this process: the child starts with every fd, string and library
  # sent so far, and takes its own commands from then on. This one stays
  # usable (a template).
  def fork
    AnyFork.adopt(Lib.fork_fork(handle))
  end

  # Keeps n processes forked from this template ahead of #fork (0 to 64;
  # 0 is the default except for ::template's): #fork hands out one already
  # forked, and what is sent to it goes straight to it. A replacement is
  # forked at once when forks come back to back, else 2 ms after, by the
  # next dispatch (AnyFork.wait, or a loop watching AnyFork.loop_io).
  # Sending this template anything replaces the waiting processes.
  def fork_ahead(n)
    unless n.is_a?(Integer) && (0..64).cover?(n)
      raise ArgumentError, "fork_ahead: n is the number of processes forked ahead, 0 to 64, not #{n.inspect}"
    end

    AnyFork.check(Lib.fork_ahead(handle, n))
    self
  end

  # Sends an fd (an IO, or anything with to_io, or an Integer): the next
  # argument of the run function. The library duplicates it at once: close
  # yours whenever you like.
  def send_io(io)
    fd = io.is_a?(Integer) ? io : io.to_io.fileno
    AnyFork.check(Lib.fork_send_fd(handle, fd))
    self
  end
  alias send_fd send_io

  # Sends strings (bytes, any encoding; other objects as to_s), each the
  # next argument of the run function.
  def send_arg(*args)
    args.each do |a|
      s = a.is_a?(String) ? a : a.to_s
      AnyFork.check(Lib.fork_send_arg(handle, s, s.bytesize))
    end
    self
  end

  # Loads shared libraries into the process (dlopen), so that later eval
  # and run calls find C functions there.
  def require(*libraries)
    libraries.each { |lib| AnyFork.check(Lib.fork_require(handle, AnyFork.cstr(lib))) }
    self
  end

  # Calls function(*args) in the process now: a C function
  # int fn(const fork_arg *, size_t), a builtin (anyfork_setenv,
  # anyfork_chdir, anyfork_comm_fd, ...), or in Ruby processes a Ruby
  # method. A failure (non-zero status) makes the process exit.
  def eval(function, *args)
    strs = args.map { |a| a.is_a?(String) ? a : a.to_s }
    n = strs.size
    bufs = strs.map { |s| FFI::MemoryPointer.new(:uint8, [s.bytesize, 1].max).put_bytes(0, s) }
    data = FFI::MemoryPointer.new(:pointer, [n, 1].max)
    lens = FFI::MemoryPointer.new(:size_t, [n, 1].max)
    bufs.each_with_index { |b, i| data.put_pointer(i * FFI::Pointer.size, b) }
    strs.each_with_index { |s, i| lens.put(:size_t, i * FFI.type_size(:size_t), s.bytesize) }
    AnyFork.check(Lib.fork_eval_n(handle, AnyFork.cstr(function), data, lens, n))
    self
  end

  # Loads Ruby files into a Ruby process (a template copy or a
  # ::new_ruby server): Kernel.require there, through #eval.
  def ruby_require(*features)
    features.each { |f| eval("Kernel.require", f) }
    self
  end

  # Calls the block with (pid, AnyFork::Status) once the process has
  # exited. Works for every process; call it before #run. A second call
  # replaces the block (the first then gets a status whose error is
  # ECANCELED).
  def on_exit(&block)
    raise ArgumentError, "on_exit needs a block" unless block

    id = AnyFork.register(block)
    rc = Lib.fork_on_exit(handle, EXIT_CB, FFI::Pointer.new(id))
    if rc.negative?
      AnyFork.unregister(id)
      AnyFork.check(rc)
    end
    self
  end

  # The process's pid (may wait for the template's report).
  def pid
    return @pid if @pid

    n = Lib.fork_pid(handle)
    raise AnyFork.last_error if n.negative?

    @pid = n
  end

  # Makes the process enter function (see #eval for what names mean) with
  # its comm socket and every fd and string sent, in order. Consumes the
  # process. With a block: returns nil, and the block gets (io, error)
  # later from AnyFork.wait/dispatch (io nil when the process could not be
  # reached). Without: waits and returns the IO.
  def run(function, &block)
    name = AnyFork.cstr(function)
    AnyFork.start(block) { |cb, ud| Lib.fork_run(consume, name, cb, ud) }
  end

  # Runs a program in the process (the anyfork_exec builtin): argv follows
  # any strings sent before; the fds sent become the program's 0, 1, 2, ...
  # in order. env: a Hash (or "NAME=VALUE" strings) is the program's whole
  # environment; nil keeps the template's. Consumes the process; the block
  # and return value as for #run.
  def exec(*argv, env: nil, &block)
    args = AnyFork.strv(argv.flatten)
    envp = env && AnyFork.strv(env.map { |k, v| v.nil? ? k.to_s : "#{k}=#{v}" })
    AnyFork.start(block) { |cb, ud| Lib.fork_exec(consume, args, envp, cb, ud) }
  end

  # Frees the process now without running it: it gets what was queued,
  # then exits. (The garbage collector does the same.)
  def free
    ptr = @ptr or return nil
    @ptr = nil
    ptr.free
    nil
  end

  # True until #run, #exec or #free.
  def live?
    !@ptr.nil?
  end

  def inspect
    "#<AnyFork #{live? ? 'live' : 'consumed'}#{@pid ? " pid #{@pid}" : ''}>"
  end

  private

  def own(ptr)
    @ptr = FFI::AutoPointer.new(ptr, AnyFork.releaser)
  end

  def handle
    @ptr or raise Error.new("this AnyFork has already run or was freed", Errno::EBADF::Errno)
  end

  # Hands the pointer to a call that takes ownership.
  def consume
    ptr = handle
    @ptr = nil
    ptr.autorelease = false
    FFI::Pointer.new(ptr.address)
  end
end

require_relative "anyfork/rpc"
require_relative "anyfork/rpc_worker"
require_relative "anyfork/pool"
