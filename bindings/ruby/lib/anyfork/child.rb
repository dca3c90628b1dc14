# frozen_string_literal: true

require "socket"
require_relative "lib"

class AnyFork
  # Ruby code in processes that anyfork makes: the dispatcher that
  # fork_set_dispatch installs, and what a process needs before the
  # interpreter it copied can run there.
  #
  # The processes are copies of a Ruby interpreter made by a plain C fork()
  # (in fork_template, or in the template server's loop), not by
  # Kernel#fork, so none of Ruby's own after-fork work has happened, and a
  # template keeps only fds 0, 1 and 2. Before Ruby code runs in such a
  # copy, the dispatcher puts back what the interpreter relies on, as
  # recorded in the parent just before it was copied (Snapshot):
  #
  # - its internal fds (Ruby 3.1 keeps two eventfds for signals and
  #   wake-ups; fds move out of the way first: the copy's own fds land on
  #   the low numbers the parent used),
  # - its POSIX timer (Ruby arms timer 0 to interrupt blocked threads;
  #   timers are not inherited by fork), recreated with the same id,
  # - the signal handlers of its runtime (SIGCHLD for Process.wait and
  #   backticks, SIGVTALRM for Thread#raise and Timeout, SIGPIPE so that
  #   EPIPE raises, and the crash reporters), which the library resets to
  #   defaults before a run,
  # - rb_thread_atfork(), Ruby's own after-fork call: the GVL and thread
  #   list are reset, Random reseeds,
  # - and, in template copies, Ruby IO objects of the parent are closed
  #   without touching the fd numbers they held (flushing nothing into fds
  #   that now mean something else); the garbage collector, paused across
  #   the fork so that no finalizer closed such a number, runs again.
  #
  # Ruby's signal self-pipe and timer still name the parent as their
  # owner, which Ruby checks before forking again: Kernel#fork (and
  # IO.popen("-")) raise NotImplementedError in these processes instead of
  # crashing the interpreter. Process.spawn, system and backticks work.
  module Child
    # libc calls for the fixups above.
    module Libc
      extend FFI::Library
      ffi_lib FFI::Library::LIBC
      attach_function :fcntl, %i[int int varargs], :int
      attach_function :close, [:int], :int
      attach_function :dup3, %i[int int int], :int
      attach_function :eventfd, %i[uint int], :int
      attach_function :sigaction, %i[int pointer pointer], :int
      attach_function :timer_create, %i[int pointer pointer], :int
      attach_function :timer_delete, [:pointer], :int
    end

    # Ruby's own after-fork call, exported by libruby.
    module RubyVM
      extend FFI::Library
      ffi_lib FFI::CURRENT_PROCESS
      begin
        attach_function :rb_thread_atfork, [], :void
      rescue FFI::NotFoundError
        def self.rb_thread_atfork; end
      end
    end

    F_GETFD = 1
    F_DUPFD_CLOEXEC = 1030
    O_CLOEXEC = 0o2000000
    EFD_CLOEXEC = O_CLOEXEC
    EFD_NONBLOCK = 0o4000
    SIGEV_SIGNAL = 0
    RTIMER_DISARM = 0 # Ruby 3.1's enum rtimer_state
    RTIMER_ARMED = 2
    RTIMER_DEAD = 3
    MARK = 0x616e79 # the count of stand-in eventfds that are to go
    EVENTFD = "anon_inode:[eventfd]"
    # Signals whose handlers belong to the interpreter's runtime.
    RUNTIME_SIGNALS = %w[CHLD PIPE VTALRM SEGV BUS ILL FPE SYS].freeze

    # What the interpreter held just before it was copied.
    Snapshot = Struct.new(:pid, :mode, :eventfds, :high, :timers, :sigactions,
                          :stale, :gc_enable, keyword_init: true)

    @snapshot = nil
    @done = {}
    @atfork_pid = Process.pid

    class << self
      attr_reader :snapshot, :atfork_pid

      # Ruby's after-fork reset, first thing in a copy. It must come before
      # the interpreter checks for interrupts (at the first branch of Ruby
      # code): a thread of the parent that was waiting for the GVL (the ffi
      # gem's callback thread, say) would otherwise be waited for forever.
      def after_fork!
        RubyVM.rb_thread_atfork
        @atfork_pid = Process.pid
      end

      # Records the interpreter's state; called right before it is copied.
      # mode :template (fork_template: fds are closed in the copy, Ruby IO
      # objects of this process go stale) or :server (an exec'd server).
      def take_snapshot(mode)
        fds = open_fds
        stale = {}
        if mode == :template
          ObjectSpace.each_object(IO) { |io| stale[io.object_id] = true }
          ObjectSpace.each_object(Dir) { |d| stale[d.object_id] = true }
        end
        @snapshot = Snapshot.new(
          pid: Process.pid,
          mode: mode,
          eventfds: fds.select { |_, link| link == EVENTFD }.keys.sort,
          high: (fds.keys.max || 2) + 1,
          timers: ruby_timers,
          sigactions: runtime_sigactions,
          stale: stale,
          gc_enable: nil
        )
      end

      # The exec'd Ruby server's main (lib/anyfork/server.rb).
      def serve(fd_text)
        fd = Integer(fd_text.to_s, exception: false)
        abort "anyfork server: ANYFORK_FD is not set (started by AnyFork.new_ruby)" unless fd

        take_snapshot(:server)
        Lib.fork_set_dispatch(DISPATCH, nil)
        $stdout.flush
        $stderr.flush
        rc = Lib.fork_serve(fd)
        abort "anyfork server: #{Lib.fork_last_error} (#{rc})"
      end

      # The dispatcher: runs the Ruby method `name`, or passes the name on
      # to dlsym when it names none. Never raises.
      def dispatch(kind, name, fd, args_ptr, nargs)
        what = kind == Lib::FORK_CALL_RUN ? "run" : "eval"
        target = resolve(name)
        return Lib::FORK_DISPATCH_PASS unless target

        raw = read_args(args_ptr, nargs)
        if kind == Lib::FORK_CALL_RUN
          fd = prepare_run(fd, raw)
          call(target, [UNIXSocket.for_fd(fd), *raw.map { |a| to_ruby(a) }], what, name)
        else
          prepare_eval
          call(target, raw.map { |a| to_ruby(a) }, what, name)
        end
      rescue Exception => e # rubocop:disable Lint/RescueException
        report(e, what, name)
        1
      end

      private

      # "Mod::Klass.method" (a public method of that module or class), or
      # "method" (a method the program defined at top level); nil when
      # the name means no Ruby method.
      def resolve(name)
        if (dot = name.rindex("."))
          recv = begin
            Object.const_get(name[0...dot])
          rescue NameError, ArgumentError
            return nil
          end
          meth = name[(dot + 1)..]
          recv.respond_to?(meth) ? recv.method(meth) : nil
        else
          sym = name.to_sym
          top = Object.private_method_defined?(sym, false) || Object.method_defined?(sym, false)
          top ? TOPLEVEL_BINDING.receiver.method(sym) : nil
        end
      end

      def call(target, args, what, name)
        target.call(*args)
        0
      rescue SystemExit => e
        e.status
      rescue Exception => e # rubocop:disable Lint/RescueException
        report(e, what, name)
        1
      ensure
        flush_all
      end

      # The process ends with _exit, without Ruby's at_exit handlers and
      # finalizers (they belong to the parent): what Ruby IO objects still
      # buffer is written here.
      # Not the parent's objects above fd 2: in a template copy their
      # numbers may belong to the library or to other files by now.
      def flush_all
        stale = @snapshot&.stale || {}
        ObjectSpace.each_object(IO) do |io|
          next if io.closed?
          next if stale[io.object_id] && io.fileno > 2

          io.flush
        rescue StandardError
          nil
        end
      end

      # Writes the exception to stderr, with the backtrace cut where the
      # dispatcher called in (below that is the parent's stack, copied).
      def report(err, what, name)
        bt = err.backtrace || []
        cut = bt.index { |f| f.start_with?("#{__FILE__}:") && f.end_with?("in `call'") }
        err.set_backtrace(bt[0...cut]) if cut
        $stderr.write("anyfork[#{Process.pid}]: #{what} #{name}: " \
                      "#{err.full_message(highlight: false, order: :top)}")
      rescue Exception # rubocop:disable Lint/RescueException
        nil
      end

      # [[:fd, n] or [:str, bytes], ...] from the fork_arg array.
      def read_args(ptr, n)
        Array.new(n) do |i|
          a = Lib::Arg.new(ptr + i * Lib::Arg.size)
          if a[:kind] == Lib::FORK_ARG_FD
            [:fd, a[:fd]]
          else
            [:str, a[:len].zero? ? "".b : a[:data].read_bytes(a[:len])]
          end
        end
      end

      def to_ruby((kind, value))
        return text(value) if kind == :str

        if IO.for_fd(value, autoclose: false).stat.socket?
          Socket.for_fd(value)
        else
          IO.for_fd(value)
        end
      end

      def text(bytes)
        s = bytes.dup.force_encoding(Encoding.default_external)
        s.valid_encoding? ? s : bytes
      end

      def copy?
        @snapshot && Process.pid != @snapshot.pid
      end

      def once(step)
        return if @done[step] == Process.pid

        @done[step] = Process.pid
        yield
      end

      # Before an eval in a copy: what can be fixed without moving fds the
      # library still uses (the server loop runs on around the eval).
      def prepare_eval
        return unless copy?

        if eventfd_slots_free?
          once(:runtime) { reset_runtime }
        else
          once(:timers) { recreate_timers }
        end
        restore_signals
      end

      # Before a run in a copy: everything. Returns the comm socket's fd,
      # moved with the received fds in raw (updated in place).
      def prepare_run(fd, raw)
        return fd unless copy?

        fd = move_up(fd)
        raw.each { |a| a[1] = move_up(a[1]) if a[0] == :fd }
        once(:runtime) { reset_runtime(warn: true) }
        once(:stale) { close_stale_objects } if @snapshot.mode == :template
        restore_signals
        GC.enable if @snapshot.gc_enable
        fd
      end

      # The interpreter's fds and timer. Best: Ruby redoes its own
      # after-fork setup (restart_timer_thread); else they are recreated
      # as the parent had them, and Kernel#fork is refused.
      def reset_runtime(warn: false)
        if eventfd_slots_free?(warn: warn)
          if restartable?
            # Ruby closes its old eventfds and makes new ones; the marked
            # stand-ins it did not close (the parent's other eventfds)
            # are dropped after.
            replace_eventfds(MARK)
            restart_timer_thread
            close_marked_eventfds
            return
          end
          replace_eventfds(0)
        end
        once(:timers) { recreate_timers }
        Process.singleton_class.prepend(NoFork)
      end

      # Ruby 3.1 restarts its timer machinery (signal eventfds, the
      # SIGVTALRM timer, the thread that waits for signals) when an exec
      # fails, and does so as in a child after fork when the pid differs
      # from the one it recorded; that path wants its POSIX timer marked
      # dead, as Kernel#fork marks it before forking. The timer's state
      # lives in the struct whose address the timer carries as its signal
      # value (/proc/self/timers): {state, owner pid, timer id}. It is
      # marked dead only when the owner and id there are the parent's, then
      # an exec that must fail (ENOTDIR) does the rest.
      def restartable?
        t = @snapshot.timers.first or return false
        rt = FFI::Pointer.new(t[:value])
        rt.get_int32(4) == @snapshot.pid && rt.get_pointer(8).address == t[:id] &&
          rt.get_int32(0).between?(RTIMER_DISARM, RTIMER_ARMED)
      end

      def restart_timer_thread
        FFI::Pointer.new(@snapshot.timers.first[:value]).put_int32(0, RTIMER_DEAD)
        Kernel.exec("/dev/null/anyfork-restarts-ruby-timer")
      rescue SystemCallError
        nil
      end

      # Moves an fd of ours above every number the parent used.
      def move_up(fd)
        return fd if fd >= @snapshot.high

        moved = Libc.fcntl(fd, F_DUPFD_CLOEXEC, :int, @snapshot.high)
        return fd if moved.negative?

        Libc.close(fd)
        moved
      end

      def fd_link(fd)
        File.readlink("/proc/self/fd/#{fd}")
      rescue SystemCallError
        nil
      end

      # True when each fd number the interpreter uses internally is free or
      # still an eventfd (its own, inherited), so a fresh one can go there.
      def eventfd_slots_free?(warn: false)
        busy = @snapshot.eventfds.reject { |n| (link = fd_link(n)).nil? || link == EVENTFD }
        if warn && !busy.empty?
          $stderr.write("anyfork[#{Process.pid}]: fds #{busy.join(', ')} (used by the Ruby " \
                        "interpreter itself) were taken by code run in the template; " \
                        "sleeping or waiting in Ruby may fail here\n")
        end
        busy.empty?
      end

      # A fresh eventfd (holding count) at each number the parent had one.
      def replace_eventfds(count)
        @snapshot.eventfds.each do |n|
          e = Libc.eventfd(count, EFD_CLOEXEC | EFD_NONBLOCK)
          next if e.negative? || e == n

          Libc.dup3(e, n, O_CLOEXEC)
          Libc.close(e)
        end
      end

      def close_marked_eventfds
        @snapshot.eventfds.each do |n|
          info = File.read("/proc/self/fdinfo/#{n}")
          count = info[/^eventfd-count:\s*(\h+)/, 1]
          Libc.close(n) if count && count.to_i(16) == MARK
        rescue SystemCallError
          nil
        end
      end

      # Ruby arms a POSIX timer by id; a fork has none, so the timer comes
      # back under the same id (ids are handed out in order in a new
      # process: lower ones are made and dropped on the way).
      def recreate_timers
        @snapshot.timers.each do |t|
          spares = []
          loop do
            id = create_timer(t)
            break unless id

            if id[:num] == t[:id]
              break
            elsif id[:num] < t[:id] && spares.size < 64
              spares << id[:handle]
            else
              Libc.timer_delete(id[:handle])
              $stderr.write("anyfork[#{Process.pid}]: could not recreate the Ruby " \
                            "interpreter's timer #{t[:id]}\n")
              break
            end
          end
          spares.each { |h| Libc.timer_delete(h) }
        end
      end

      def create_timer(t)
        sev = FFI::MemoryPointer.new(:uint8, 64)
        sev.put_uint64(0, t[:value])
        sev.put_int32(8, t[:signal])
        sev.put_int32(12, SIGEV_SIGNAL)
        out = FFI::MemoryPointer.new(:pointer)
        return nil if Libc.timer_create(t[:clock], sev, out).negative?

        handle = out.read_pointer
        # The kernel's id, as /proc/self/timers shows it: the newest one.
        num = timer_ids.max
        { handle: handle, num: num || -1 }
      end

      # Closes the parent's IO and Dir objects: their fd numbers were closed
      # in the template and may mean other files now. Nothing is closed or
      # flushed on those numbers: they are free at this point.
      def close_stale_objects
        stale = @snapshot.stale
        ObjectSpace.each_object(IO) do |io|
          next unless stale[io.object_id]
          next if io.closed?
          next if io.fileno <= 2

          io.autoclose = false
          begin
            io.close
          rescue StandardError
            nil
          end
        rescue StandardError
          nil
        end
        ObjectSpace.each_object(Dir) do |d|
          next unless stale[d.object_id]

          begin
            d.close
          rescue StandardError
            nil
          end
        end
      end

      def restore_signals
        @snapshot.sigactions.each { |sig, act| Libc.sigaction(sig, act, nil) }
      end

      # In the parent: {fd => readlink}.
      def open_fds
        Dir.children("/proc/self/fd").each_with_object({}) do |f, h|
          n = Integer(f, exception: false) or next
          link = fd_link(n) or next
          h[n] = link
        end
      end

      def timer_ids
        File.read("/proc/self/timers").scan(/^ID: (\d+)/).flatten.map(&:to_i)
      rescue SystemCallError
        []
      end

      # The interpreter's timers: those that signal SIGVTALRM.
      def ruby_timers
        vtalrm = Signal.list["VTALRM"]
        File.read("/proc/self/timers").split(/^(?=ID:)/).filter_map do |e|
          id = e[/^ID: (\d+)/, 1] or next
          sig, value = e.match(%r{^signal: (\d+)/(\h+)})&.captures
          next unless sig && sig.to_i == vtalrm
          next unless e =~ %r{^notify: signal/pid}

          { id: id.to_i, signal: sig.to_i, value: value.to_i(16),
            clock: e[/^ClockID: (\d+)/, 1].to_i }
        end
      rescue SystemCallError
        []
      end

      def runtime_sigactions
        RUNTIME_SIGNALS.filter_map do |name|
          sig = Signal.list[name] or next
          act = FFI::MemoryPointer.new(:uint8, 256)
          next if Libc.sigaction(sig, nil, act).negative?
          next if act.read_pointer.null? # SIG_DFL

          [sig, act]
        end
      end
    end

    # Kernel#fork in a process anyfork made from Ruby: refused (Ruby 3.1
    # would abort, see the module docs).
    module NoFork
      def _fork
        raise NotImplementedError,
              "fork is not available in a process that anyfork made from Ruby " \
              "(the interpreter was copied by a C fork); use AnyFork or Process.spawn"
      end
    end

    # [nothing, the reset], indexed by "is this a new copy" without a
    # branch (see after_fork!): 0 in the process that ran it last, 1 in
    # any other.
    AFTER_FORK = [-> {}, -> { Child.after_fork! }].freeze

    DISPATCH = FFI::Function.new(:int, %i[int pointer int pointer size_t pointer]) do |kind, name, fd, args, nargs, _ud|
      AFTER_FORK[(Process.pid <=> Child.atfork_pid).abs].call
      Child.dispatch(kind, name.read_string, fd, args, nargs)
    end
  end
end
