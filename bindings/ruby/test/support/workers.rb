# frozen_string_literal: true

# Ruby methods that the tests run in processes forked from the test
# program's template (AnyFork.template). Each gets the comm socket and the
# arguments, and reports on the socket.
module TestWorkers
  PREPARED = (1..1000).sum # state made before the template: the copy has it

  class << self
    # One line per argument, in order: "str <text>", or "io <type>" for an
    # fd (a pipe's write end gets "hello <n>", a file is read).
    def describe(io, *args)
      args.each_with_index do |a, i|
        case a
        when String
          io.puts "str #{a}"
        when IO
          st = a.stat
          if st.pipe?
            a.write("hello #{i}\n")
            io.puts "io pipe"
          elsif st.file?
            io.puts "io file #{a.read.strip}"
          else
            io.puts "io other"
          end
        end
      end
      io.puts "pid #{Process.pid}"
      io.puts "prepared #{PREPARED}"
      io.puts "setup #{$anyfork_setup.inspect}" if defined?($anyfork_setup) && $anyfork_setup
    end

    # The Ruby runtime in a copy: sleeping, threads, timeouts, subprocesses,
    # signals. One "name value" line each.
    def runtime(io, *_)
      require "timeout"
      t = now
      sleep 0.05
      io.puts "sleep #{now - t >= 0.04}"
      io.puts "thread #{Thread.new { sleep 0.01; 42 }.value}"
      q = Queue.new
      Thread.new { sleep 0.02; q << :popped }
      io.puts "queue #{q.pop}"
      io.puts "timeout #{(Timeout.timeout(0.1) { sleep 5 } rescue $!.class)}"
      r, w = IO.pipe
      io.puts "timeout_read #{(Timeout.timeout(0.1) { r.read(1) } rescue $!.class)}"
      reader = Thread.new { Thread.current.report_on_exception = false; r.read(1) }
      sleep 0.02
      reader.raise(IOError, "stopped")
      io.puts "thread_raise #{(reader.join rescue $!.message)}"
      w.write("x")
      io.puts "select #{IO.select([r], nil, nil, 1)&.first&.size}"
      io.puts "system #{system('true')}"
      io.puts "backticks #{`echo hi`.strip}"
      pid = Process.spawn("sh", "-c", "exit 3")
      io.puts "spawn #{Process.wait2(pid)[1].exitstatus}"
      got = nil
      old = trap("USR1") { got = :usr1 }
      Process.kill(:USR1, Process.pid)
      Timeout.timeout(1) { sleep 0.01 until got }
      trap("USR1", old)
      io.puts "trap #{got}"
      forked = fork { exit! 7 }
      io.puts "fork #{Process.wait2(forked)[1].exitstatus}"
      io.puts "rand #{rand(1 << 62)}"
      io.puts "pid #{Process.pid}"
      io.puts "gc #{GC.start.nil?}"
    end

    def exit_with(_io, status)
      exit Integer(status)
    end

    def raise_error(_io, *_)
      raise ArgumentError, "boom from the worker"
    end

    # Whether a file the parent opened before the template is closed here.
    def stale(io, *_)
      f = $anyfork_parent_file
      io.puts "closed #{f.closed?}"
    end

    # The fds of this process above 2, as "number kind" lines (kind: what
    # /proc says, with socket and pipe inode numbers dropped).
    def fds(io, *_)
      Dir.children("/proc/self/fd").map(&:to_i).sort.each do |n|
        next if n <= 2

        link = File.readlink("/proc/self/fd/#{n}") rescue next # the listing's own fd
        io.puts "#{n} #{link.sub(/:\[\d+\]\z/, '')}"
      end
    end

    # For eval: remembers its argument for a later run.
    def setup(value)
      $anyfork_setup = value
    end

    # Writes its strings back, bytes as they came, space separated.
    def echo(io, *args)
      io.write(args.map(&:b).join(" "))
    end

    private

    def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end

# A top-level method: runs as run("toplevel_worker").
def toplevel_worker(io, *args)
  io.write("top #{args.join(',')}")
end

# A file the test program holds open when the template is made: the copy
# keeps it open, as a child of Kernel#fork does.
$anyfork_parent_file = File.open(__FILE__)

# Workers for the stress tests (test/stress_test.rb).
module StressWorkers
  class << self
    # For eval: keeps the process busy for seconds (a string), so that
    # whatever is queued after it waits.
    def nap(seconds)
      sleep(Float(seconds))
    end

    # Writes the byte sizes of its strings.
    def sizes(io, *args)
      io.write(args.map(&:bytesize).join(" "))
    end

    # Ends the process the way `how` names, as the stress test compares
    # with Kernel#fork.
    def end_by(_io, how)
      StressWorkers.finish(how)
    end

    def finish(how)
      case how
      when "exit_3" then exit 3
      when "exit_true" then exit true
      when "exit_false" then exit false
      when "exit_bang_4" then exit! 4
      when "abort" then abort "aborted on purpose"
      when "raise" then raise "raised on purpose"
      when "kill_term" then Process.kill(:TERM, Process.pid) && sleep(5)
      when "kill_kill" then Process.kill(:KILL, Process.pid) && sleep(5)
      when "return" then nil
      else raise ArgumentError, "no way to end named #{how}"
      end
    end
  end
end

# A Process._fork hook, as a gem adds one: records in each child that it
# ran there.
module TestForkHook
  def _fork
    pid = super
    $test_fork_hook_ran_in = Process.pid if pid.zero?
    pid
  end
end
Process.singleton_class.prepend(TestForkHook)

# Reports whether the _fork hook ran in this very process.
def fork_hook_seen(io)
  io.write("ran_here=#{$test_fork_hook_ran_in == Process.pid}")
end
