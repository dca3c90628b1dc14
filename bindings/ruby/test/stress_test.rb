# frozen_string_literal: true

require_relative "helper"

# The binding under stress (issue 19's checklist): threads, signals,
# exceptions in callbacks, the garbage collector, Ruby's own fork.
class StressTest < Minitest::Test
  include AnyForkTestHelper

  def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # Runs the block with these threads alive; they stop (and are joined)
  # after it.
  def with_threads(*bodies)
    stop = false
    threads = bodies.map { |b| Thread.new { b.call(-> { stop }) } }
    yield
  ensure
    stop = true
    threads&.each { |t| Timeout.timeout(LIMIT) { t.join } }
  end

  WAITER = ->(stop) { AnyFork.wait(0.1) until stop.call }
  # Gives the GVL away often, so that callbacks wait for it now and then.
  PASSER = ->(stop) { until stop.call; 200.times {}; Thread.pass; end }

  # Issue 19 item 7: a blocking run checked "no callback pending" while
  # another thread had taken its callback but not called it yet (it waits
  # for the GVL), and raised although the process was made.
  def test_blocking_runs_while_another_thread_waits
    failures = []
    got = 0
    with_threads(WAITER, PASSER) do
      5000.times do
        io = AnyFork.new.send_arg("0").run("anyfork_exit")
        got += 1 if io.is_a?(UNIXSocket)
        io.close
      rescue AnyFork::Error => e
        failures << e.message
      end
    end
    assert_equal [], failures.tally.to_a, "blocking runs that lost their socket"
    assert_equal 5000, got
    assert_equal 0, AnyFork.pending
  end

  # Two threads each waiting for their own processes at once.
  def test_two_threads_waiting_at_once
    got = Queue.new
    threads = 2.times.map do |t|
      Thread.new do
        25.times do |i|
          AnyFork.new.eval("anyfork_comm_fd", "1").exec("echo", "#{t}-#{i}") { |io| got << read_all(io) }
        end
        deadline = now + LIMIT
        # (pending reaches 0 while the other thread may still be calling
        # the last callback: the count is checked after both joined)
        AnyFork.wait(0.5) while AnyFork.pending.positive? && now < deadline
      end
    end
    Timeout.timeout(LIMIT + 5) { threads.each(&:join) }
    lines = Array.new(got.size) { got.pop }
    assert_equal 2.times.flat_map { |t| 25.times.map { |i| "#{t}-#{i}\n" } }.sort, lines.sort
    assert_equal 0, AnyFork.pending
  end

  def test_callbacks_run_on_the_thread_that_waits
    seen = Queue.new
    5.times do
      p = AnyFork.new.send_arg("0")
      p.on_exit { seen << [:exit, Thread.current] }
      p.run("anyfork_exit") { |io| io.close; seen << [:run, Thread.current] }
    end
    waiter = Thread.new { AnyFork.wait(0.5) while AnyFork.pending.positive? }
    Timeout.timeout(LIMIT) { waiter.join }
    calls = Array.new(seen.size) { seen.pop }
    assert_equal 10, calls.size
    assert_equal [waiter], calls.map(&:last).uniq
    assert_equal({ run: 5, exit: 5 }, calls.map(&:first).tally)
  end

  # Every due callback runs exactly once; each exception comes out of a
  # wait, none is lost.
  def test_exceptions_in_callbacks_with_others_due
    ran = Hash.new(0)
    6.times do |i|
      AnyFork.new.send_arg("0").run("anyfork_exit") do |io|
        io.close
        ran[i] += 1
        raise ArgumentError, "callback #{i}" if i.odd?
      end
    end
    sleep 0.3 # all due by now
    raised = []
    deadline = now + LIMIT
    while (AnyFork.pending.positive? || raised.size < 3) && now < deadline
      begin
        AnyFork.wait(0.5)
      rescue ArgumentError => e
        raised << e.message
      end
    end
    assert_equal ["callback 1", "callback 3", "callback 5"], raised.sort
    assert_equal (0...6).to_h { |i| [i, 1] }, ran
  end

  # Sends SIGINT to this process after delay seconds, from a thread.
  def interrupt_after(delay)
    Thread.new do
      sleep delay
      Process.kill(:INT, Process.pid)
    end
  end

  def test_sigint_interrupts_a_wait_and_loses_no_callback
    p = AnyFork.new
    pid = p.pid
    seen = watch(p)
    p.exec("sleep", "20") { |io| io.close }
    started = now
    kicker = interrupt_after(0.3)
    assert_raises(Interrupt) { AnyFork.wait }
    assert_operator now - started, :<, 2, "the Interrupt came late"
    kicker.join
    Process.kill(:TERM, pid)
    st = exit_status(seen)
    assert_equal Signal.list["TERM"], st.termsig, "the exit callback still runs"
  end

  def test_sigint_interrupts_a_blocking_run
    # A run's socket comes once all it was sent is in the kernel: 16 MB
    # to a stopped server wait for it to go on.
    p = AnyFork.new_exec
    pid = p.pid
    seen = watch(p)
    Process.kill(:STOP, pid)
    p.send_arg("0", "x" * (16 << 20))
    started = now
    kicker = interrupt_after(0.3)
    waker = Thread.new { sleep 1.5; Process.kill(:CONT, pid) }
    assert_raises(Interrupt) { p.run("anyfork_exit") }
    assert_operator now - started, :<, 1.2, "the Interrupt came late"
    [kicker, waker].each(&:join)
    # The run's callback still comes (its socket is dropped), the process
    # ends, and the binding keeps working.
    assert_equal 0, exit_status(seen).exitstatus
    wait_until("the interrupted run's callback") { AnyFork.pending.zero? }
    assert_equal "", read_all(AnyFork.new.send_arg("0").run("anyfork_exit"))
  ensure
    begin
      Process.kill(:CONT, pid) if pid
    rescue Errno::ESRCH
      nil # ended already
    end
  end

  def rss_kb
    File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1].to_i
  end

  # 20,000 handles dropped without run, half freed by the garbage
  # collector and half by #free, with no wait call at all: fds and memory
  # stay flat. (A handle after #run holds nothing; a run always has a
  # callback in Ruby, and callbacks need a wait, so none is made here.)
  def test_dropped_handles_without_wait
    AnyFork.new.send_arg("0").run("anyfork_exit").close # default template up
    AnyFork.wait(1)
    failed = nil
    round = lambda do |n|
      n.times do |i|
        p = AnyFork.new.send_arg("never run")
        p.free if i.odd?
        GC.start if (i % 500) == 499
      rescue AnyFork::Error => e
        failed = e
        break
      end
      GC.start
    end
    none_held = lambda do |before|
      flunk "#{failed.message} (#{before} fds before): freed handles held their fds until a wait" if failed
    end
    round.call(2000) # warm up
    none_held.call(0)
    fds = open_fds
    rss = rss_kb
    round.call(9000)
    none_held.call(fds)
    round.call(9000)
    none_held.call(fds)
    grew = open_fds - fds
    assert_operator grew, :<=, 20, "more fds after 20,000 dropped handles without a wait"
    assert_operator rss_kb - rss, :<, 30_000, "memory (kB) after 20,000 dropped handles"
  ensure
    # What the library still holds goes in a dispatch: leave nothing to
    # the tests after this one.
    GC.start
    deadline = now + LIMIT
    AnyFork.dispatch while open_fds > 100 && now < deadline
  end

  # Issue 19 item 8: Kernel#fork of a program that used anyfork; parent
  # and child both keep working, each with its own processes and statuses.
  def test_kernel_fork_after_using_the_library
    statuses = []
    3.times do |i|
      AnyFork.new.send_arg(i.to_s).on_exit { |_, st| statuses << st.exitstatus }
             .run("anyfork_exit") { |io| io.close }
    end
    slow = AnyFork.new
    slow_seen = watch(slow)
    slow.exec("sh", "-c", "sleep 0.5; exit 9") { |io| io.close }
    r, w = IO.pipe
    child = fork do
      r.close
      got = []
      4.times do |i|
        AnyFork.new.send_arg((20 + i).to_s).on_exit { |_, st| got << st.exitstatus }
               .run("anyfork_exit") { |io| io.close }
      end
      out = read_all(AnyFork.new.eval("anyfork_comm_fd", "1").exec("echo", "child echo"))
      deadline = now + LIMIT
      AnyFork.wait(0.5) while AnyFork.pending.positive? && now < deadline
      w.write("#{got.sort.inspect} #{out.inspect} #{AnyFork.pending}")
      w.close
      exit!(got.size == 4 ? 0 : 1)
    rescue Exception => e # rubocop:disable Lint/RescueException
      w.write("child failed: #{e.class}: #{e.message}")
      w.close
      exit!(2)
    end
    w.close
    out = read_all(AnyFork.new.eval("anyfork_comm_fd", "1").exec("echo", "parent echo"))
    assert_equal "parent echo\n", out
    report = Timeout.timeout(LIMIT) { r.read }
    r.close
    _, cst = Timeout.timeout(LIMIT) { Process.wait2(child) }
    assert_equal "[20, 21, 22, 23] \"child echo\\n\" 0", report
    assert_equal 0, cst.exitstatus
    assert_equal 9, exit_status(slow_seen).exitstatus
    wait_until("the parent's exit callbacks") { statuses.size == 3 }
    assert_equal [0, 1, 2], statuses.sort
    assert_equal 0, AnyFork.pending
  end

  # A template made while other threads run Ruby code and sit in a system
  # call: its processes work.
  def test_template_with_other_threads_alive
    r, w = IO.pipe
    with_threads(PASSER, ->(stop) { IO.select([r], nil, nil, 0.05) until stop.call }) do
      sleep 0.05
      t = AnyFork.template
      outs = 3.times.map { |i| read_all(t.fork.send_arg("t#{i}").run("TestWorkers.echo")) }
      assert_equal %w[t0 t1 t2], outs
      t.free
    end
  ensure
    r&.close
    w&.close
  end

  # What $stdout buffered when a template is made is written once, by
  # this process, not again by each process of the copy.
  def test_buffered_output_at_template_and_fork
    Tempfile.create("anyfork-stdout") do |log|
      saved = $stdout.dup
      sync = $stdout.sync
      begin
        $stdout.reopen(log)
        $stdout.sync = false
        $stdout.write("template once ")
        t = AnyFork.template
        3.times do
          p = t.fork.send_arg("return")
          seen = watch(p)
          p.run("StressWorkers.end_by") { |io| io.close }
          assert exit_status(seen).success?
        end
        t.free
        $stdout.write("fork once ")
        pid = fork { exit!(0) } # (exit would run minitest's at_exit here)
        Process.wait(pid)
        $stdout.flush
      ensure
        $stdout.reopen(saved)
        $stdout.sync = sync
        saved.close
      end
      assert_equal "template once fork once ", File.read(log.path)
    end
  end

  WAYS = %w[exit_3 exit_true exit_false exit_bang_4 abort raise kill_term kill_kill return].freeze

  def describe_status(st)
    st.signaled? ? "signal #{st.termsig}" : "exit #{st.exitstatus}"
  end

  # Every way a Ruby process can end gives the status that Kernel#fork's
  # child gets for it.
  def test_exit_statuses_match_kernel_fork
    Tempfile.create("anyfork-stderr") do |log|
      saved = $stderr.dup
      $stderr.reopen(log) # the copy's fd 2; abort and raise write there
      t = begin
        AnyFork.template
      ensure
        $stderr.reopen(saved)
        saved.close
      end
      ours = WAYS.to_h do |how|
        p = t.fork.send_arg(how)
        seen = watch(p)
        p.run("StressWorkers.end_by") { |io| io.close }
        [how, describe_status(exit_status(seen))]
      end
      t.free
      # Kernel#fork in a plain Ruby (this one runs minitest at exit).
      script = <<~RUBY
        require "workers"
        log, *ways = ARGV
        ways.each do |how|
          pid = fork { $stderr.reopen(log, "a"); StressWorkers.finish(how) }
          st = Process.wait2(pid)[1]
          puts "\#{how} \#{st.signaled? ? "signal \#{st.termsig}" : "exit \#{st.exitstatus}"}"
        end
      RUBY
      out = IO.popen([RbConfig.ruby, "-I", File.join(__dir__, "support"), "-e", script, log.path, *WAYS],
                     &:read)
      rubys = out.lines.to_h { |l| l.chomp.split(" ", 2) }
      assert_equal rubys, ours
      assert_equal "exit 3", ours["exit_3"] # the comparison means something
      assert_equal 2, File.read(log.path).scan("aborted on purpose").size
    end
  end
end
