# frozen_string_literal: true

require_relative "helper"

# Ruby code in processes forked from a copy of this interpreter
# (AnyFork.template) or from a fresh Ruby server (AnyFork.new_ruby).
class TemplateTest < Minitest::Test
  include AnyForkTestHelper

  def test_args_and_fds_arrive_in_order_before_and_after_fork
    # The shared template first: a copy of the program made after the
    # pipes would keep w1 and w2 open for good, and r1 would never end.
    template
    r1, w1 = IO.pipe
    r2, w2 = IO.pipe
    file = File.join(Dir.tmpdir, "anyfork-test-#{Process.pid}")
    File.write(file, "file content")
    t = template.fork.send_arg("one").send_io(w1).send_arg("two")
    w1.close
    p = t.fork.send_arg("three")
    File.open(file) { |f| p.send_io(f) }
    p.send_io(w2).send_arg("four")
    w2.close
    pid = p.pid
    lines = read_all(p.run("TestWorkers.describe")).lines.map(&:chomp)
    assert_equal ["str one", "io pipe", "str two", "str three", "io file file content",
                  "io pipe", "str four", "pid #{pid}", "prepared 500500"], lines
    t.free # it holds a copy of w1 too: r1 ends when it exits
    assert_equal "hello 1\n", read_all(r1)
    assert_equal "hello 5\n", read_all(r2)
  ensure
    File.unlink(file) if file && File.exist?(file)
  end

  def test_strings_keep_their_bytes
    bin = "\xff\x00\xfe".b
    out = read_all(template.fork.send_arg("héllo", bin, "").run("TestWorkers.echo"))
    assert_equal "héllo ".b + bin + " ".b, out.b
  end

  def test_the_ruby_runtime_works_in_a_copy
    outs = 2.times.map do
      p = template.fork
      [p.pid, read_all(p.run("TestWorkers.runtime"))]
    end
    outs.each do |pid, out|
      report = out.lines.to_h { |l| l.chomp.split(" ", 2) }
      expected = {
        "sleep" => "true", "thread" => "42", "queue" => "popped",
        "timeout" => "Timeout::Error", "timeout_read" => "Timeout::Error",
        "thread_raise" => "stopped", "select" => "1", "system" => "true",
        "backticks" => "hi", "spawn" => "3", "trap" => "usr1",
        "fork" => "7", "pid" => pid.to_s, "gc" => "true"
      }
      assert_equal expected, report.except("rand"), out
    end
    refute_equal outs[0][1][/^rand .*/], outs[1][1][/^rand .*/], "Random reseeds in each copy"
  end

  # The copy keeps the program's fds, as Kernel#fork does: those open
  # when it was made (a pipe here) are there, at the same numbers.
  def test_a_copy_keeps_the_programs_fds
    r, w = IO.pipe
    t = AnyFork.template
    lines = read_all(t.fork.run("TestWorkers.fds")).lines.map(&:chomp)
    assert_includes lines, "#{r.fileno} pipe"
    assert_includes lines, "#{w.fileno} pipe"
    t.free
    r.close
    w.close
  end

  def test_a_parent_thread_asleep_when_the_template_is_made
    sleeper = Thread.new { sleep 60 } # may hold Ruby's signal-waiting fd then
    sleep 0.05
    t = AnyFork.template
    sleeper.kill
    report = read_all(t.fork.run("TestWorkers.runtime")).lines.to_h { |l| l.chomp.split(" ", 2) }
    assert_equal ["3", "7", "Timeout::Error"], report.values_at("spawn", "fork", "timeout")
    t.free
  end

  def test_exit_status_comes_from_exit
    p = template.fork.send_arg("5")
    seen = watch(p)
    p.run("TestWorkers.exit_with") { |io| io.close }
    assert_equal 5, exit_status(seen).exitstatus
  end

  # A template whose stderr (fd 2 when it is made) is a file.
  def with_stderr_template
    Tempfile.create("anyfork-stderr") do |log|
      saved = STDERR.dup
      STDERR.reopen(log)
      t = begin
        AnyFork.template
      ensure
        STDERR.reopen(saved)
        saved.close
      end
      yield t, -> { File.read(log.path) }
      t.free
    end
  end

  def test_an_exception_exits_1_with_its_message_on_stderr
    with_stderr_template do |t, stderr|
      p = t.fork
      seen = watch(p)
      read_all(p.run("TestWorkers.raise_error"))
      assert_equal 1, exit_status(seen).exitstatus
      assert_match(/run TestWorkers.raise_error: .*workers.rb:\d+:in `raise_error': boom from the worker \(ArgumentError\)\n\z/,
                   stderr.call)
    end
  end

  def test_a_name_that_is_no_ruby_method_exits_127
    with_stderr_template do |t, stderr|
      %w[TestWorkers.nothing NoSuchModule.run no_such_toplevel].each do |name|
        p = t.fork
        seen = watch(p)
        read_all(p.run(name))
        assert_equal 127, exit_status(seen).exitstatus, name
        assert_match(/no function "#{name}"/, stderr.call)
      end
    end
  end

  def test_toplevel_methods_and_eval
    out = read_all(template.fork.send_arg("x", "y").run("toplevel_worker"))
    assert_equal "top x,y", out
    p = template.fork.eval("TestWorkers.setup", "rea\0dy").send_arg("z")
    lines = read_all(p.run("TestWorkers.describe")).lines.map(&:chomp)
    assert_includes lines, 'setup "rea\u0000dy"'
  end

  # Processes are made by Process._fork: the _fork hooks of the program
  # and its gems run in each, as with Kernel#fork.
  def test_fork_hooks_run_in_each_process
    2.times do
      assert_equal "ran_here=true", read_all(template.fork.run("fork_hook_seen"))
    end
  end

  def test_the_parents_files_stay_open_in_the_copy
    assert_equal "closed false\n", read_all(template.fork.run("TestWorkers.stale"))
    refute $anyfork_parent_file.closed?
  end

  def test_exec_from_a_ruby_template
    out = template.fork.eval("anyfork_comm_fd", "1").exec("echo", "from the exec builtin")
    assert_equal "from the exec builtin\n", read_all(out)
  end

  def test_many_workers_through_blocks
    got = {}
    30.times do |i|
      template.fork.send_arg("w#{i}").run("TestWorkers.echo") { |io| got[i] = read_all(io) }
    end
    wait_until("30 workers") { got.size == 30 }
    assert_equal (0...30).to_h { |i| [i, "w#{i}"] }, got
  end

  def test_a_fresh_ruby_server
    s = AnyFork.new_ruby.ruby_require(File.expand_path("support/server_worker", __dir__))
    spid = s.pid
    outs = %w[ann bob].map do |name|
      p = s.fork.send_arg(name)
      [p.pid, read_all(p.run("ServerWorker.greet"))]
    end
    outs.each do |pid, out|
      assert_match(/\Ahello (ann|bob) from #{pid} \(loaded in #{spid}\) Timeout::Error\z/, out)
    end
    seen = watch(s)
    s.free
    assert exit_status(seen).success?
  end

  # Live (non-zombie) children of pid.
  def live_children_of(pid)
    Dir.children("/proc").grep(/\A\d+\z/).select do |c|
      stat = File.read("/proc/#{c}/stat") rescue next
      fields = stat[(stat.rindex(")") + 2)..].split
      fields[1].to_i == pid && fields[0] != "Z"
    end
  end

  # AnyFork.template keeps a warm pool of 2 by default, and 2 processes
  # forked ahead in the caller; warm: and ahead: set them. (Processes
  # forked ahead are replaced by a dispatch.)
  def test_a_template_keeps_children_waiting_as_asked
    [[{}, 4], [{ warm: 3, ahead: 0 }, 3], [{ warm: 0, ahead: 0 }, 0], [{ warm: 0, ahead: 1 }, 1]].each do |kw, want|
      t = AnyFork.template(**kw)
      tpid = t.pid
      3.times { assert_equal "", read_all(t.fork.send_arg("5").run("TestWorkers.exit_with")) }
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + LIMIT
      until live_children_of(tpid).size == want || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        AnyFork.dispatch
        sleep 0.05
      end
      6.times { AnyFork.dispatch; sleep 0.05 } # and no more come
      assert_equal want, live_children_of(tpid).size, kw.inspect
    ensure
      t&.free
    end
  end

  def test_a_bad_warm_is_refused_before_forking
    [-1, 65, true, "2", 1.5, nil].each do |bad|
      e = assert_raises(ArgumentError) { AnyFork.template(warm: bad) }
      assert_match(/0 to 64/, e.message)
    end
  end
end
