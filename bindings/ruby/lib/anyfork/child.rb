# frozen_string_literal: true

require "socket"
require_relative "lib"

class AnyFork
  # Ruby code in processes that anyfork makes from a Ruby interpreter (a
  # template copy of this program, or a ::new_ruby server): the fork hook
  # and the dispatcher.
  #
  # Every such process, and the copy AnyFork.template makes, is made by
  # Ruby's own fork: the library forks through its fork hook
  # (fork_set_fork_hook), which calls Process._fork. So Ruby's after-fork
  # work runs in each (its timer thread, the thread list, Random's seed)
  # and so do the _fork hooks of the program and its gems; the process
  # keeps Ruby's signal handlers and, in a template copy, this program's
  # fds, as Kernel#fork leaves them. Kernel#fork, Thread, Timeout,
  # Process.wait and backticks work there as in any child of Kernel#fork.
  module Child
    # errno for the hook's failure: the library reads it when it returns.
    module Libc
      extend FFI::Library
      ffi_lib FFI::Library::LIBC
      attach_function :__errno_location, [], :pointer
    end

    class << self
      # The library's fork: Process._fork. -1 with errno when Ruby could
      # not fork (Process._fork raised).
      def fork_hook
        Process._fork
      rescue SystemCallError => e
        Libc.__errno_location.put_int(0, e.errno)
        -1
      rescue Exception => e # rubocop:disable Lint/RescueException
        report(e, "fork", "Process._fork")
        Libc.__errno_location.put_int(0, 0)
        -1
      end

      # Makes this interpreter's processes run Ruby methods and fork
      # through Ruby: before it is copied or serves.
      def install
        Lib.fork_set_dispatch(DISPATCH, nil)
        Lib.fork_set_fork_hook(FORK_HOOK, nil)
        prime
      end

      # The run method of #prime: leaves the fd to the socket #prime made
      # (this object must not close it when collected).
      def primer(sock)
        sock.autoclose = false
        0
      end

      # Runs the dispatcher's path once here, on a socket pair of its own,
      # before this interpreter is copied or serves: the method caches of
      # the code a new process runs are then filled in the copy, and the
      # new process writes less (each page it writes is a page it copies:
      # 155 faults up to the end of the dispatcher before, 105 after).
      def prime
        ours, theirs = UNIXSocket.pair
        name = FFI::MemoryPointer.from_string("AnyFork::Child.primer")
        # Through the FFI closure, as the library calls it.
        DISPATCH.call(Lib::FORK_CALL_RUN, name, theirs.fileno, nil, 0, nil)
      ensure
        [theirs, ours].each { |io| io.close if io && !io.closed? }
      end

      # The exec'd Ruby server's main (lib/anyfork/server.rb).
      def serve(fd_text)
        fd = Integer(fd_text.to_s, exception: false)
        abort "anyfork server: ANYFORK_FD is not set (started by AnyFork.new_ruby)" unless fd

        install
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
        args = raw.map { |a| to_ruby(a) }
        args.unshift(UNIXSocket.for_fd(fd)) if kind == Lib::FORK_CALL_RUN
        call(target, args, what, name)
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
      rescue SignalException => e
        die_of(e.signo, args)
      rescue Exception => e # rubocop:disable Lint/RescueException
        report(e, what, name)
        1
      ensure
        flush_all(args)
      end

      # An unhandled signal (SIGTERM, Interrupt): the process ends by that
      # signal, as a child of Kernel#fork does, so the parent sees it.
      def die_of(signo, ios)
        flush_all(ios)
        Signal.trap(signo, "SYSTEM_DEFAULT")
        Process.kill(signo, Process.pid)
        128 + signo
      end

      # The process ends with _exit, as after Kernel#exit!: at_exit
      # handlers and finalizers (they belong to the parent) do not run.
      # What the standard streams and the IOs the method was given still
      # buffer is written here. Other IO objects are not looked for: a walk
      # of the heap (ObjectSpace.each_object) in a forked child finishes
      # the lazy GC sweep it inherited, which copies most of the heap's
      # pages, and cost 1 to 9 ms a process (bindings/ruby/README.md,
      # "Speed").
      def flush_all(ios)
        [$stdout, $stderr, STDOUT, STDERR, *ios].uniq.each do |io|
          io.flush if io.is_a?(IO) && !io.closed?
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
    end

    DISPATCH = FFI::Function.new(:int, %i[int pointer int pointer size_t pointer]) do |kind, name, fd, args, nargs, _ud|
      Child.dispatch(kind, name.read_string, fd, args, nargs)
    end

    FORK_HOOK = FFI::Function.new(:int, [:pointer]) { |_ud| Child.fork_hook }
  end
end
