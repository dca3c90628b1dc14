# frozen_string_literal: true

require_relative "helper"

# Processes of anyfork-serve templates: the exec builtin, exit statuses,
# pids, errors.
class ProcessTest < Minitest::Test
  include AnyForkTestHelper

  def test_exec_builtin_maps_fds_and_argv_in_order
    r, w = IO.pipe
    null = File.open("/dev/null")
    p = AnyFork.new.send_io(null).send_io(w) # the program's 0 and 1
    seen = watch(p)
    null.close
    assert_nil p.exec("sh", "-c", 'read x; echo "[$x] $0 $1"', "a", "b") { |io| io.close }
    w.close
    assert_equal "[] a b\n", read_all(r)
    assert_equal 0, exit_status(seen).exitstatus
  end

  def test_exec_strings_sent_before_lead_argv_and_env_replaces
    p = AnyFork.new.eval("anyfork_comm_fd", "1").send_arg("sh", "-c")
    out = p.exec('echo "$0 ${FOO}-${HOME:-none}"', "x", env: { "FOO" => "bar", "PATH" => ENV["PATH"] })
    assert_equal "x bar-none\n", read_all(out)
  end

  def test_exec_failure_is_reported_with_status_127
    p = AnyFork.new
    seen = watch(p)
    out = p.exec("/nonexistent/program")
    assert_match(/nonexistent/, read_all(out))
    assert_equal 127, exit_status(seen).exitstatus
  end

  def test_run_without_block_returns_the_comm_socket
    io = AnyFork.new.send_arg("0").run("anyfork_exit")
    assert_kind_of UNIXSocket, io
    assert_equal "", read_all(io)
  end

  def test_new_exec_knows_its_pid_and_exit_status
    p = AnyFork.new_exec
    pid = p.pid
    assert_operator pid, :>, 0
    seen = watch(p)
    p.send_arg("7").run("anyfork_exit") { |io| io.close }
    st = exit_status(seen)
    assert_equal [pid, 7], [seen[:pid], st.exitstatus]
    assert st.exited?
    refute st.success?
  end

  def test_forked_processes_get_what_their_template_had
    t = AnyFork.new_exec.send_arg("sh", "-c")
    outs = %w[one two three].map do |word|
      t.fork.eval("anyfork_comm_fd", "1").exec('echo "$0"', word)
    end
    assert_equal %W[one\n two\n three\n], outs.map { |o| read_all(o) }
    t.free
  end

  def test_forked_pid_and_signal_status
    p = AnyFork.new
    pid = p.pid
    seen = watch(p)
    io = p.exec("sh", "-c", "kill -TERM $$")
    read_all(io)
    st = exit_status(seen)
    assert_equal pid, seen[:pid]
    assert st.signaled?
    assert_equal Signal.list["TERM"], st.termsig
  end

  def test_errors_raise_with_the_library_message
    p = AnyFork.new
    err = assert_raises(AnyFork::Error) { p.send_io(987_654) }
    assert_match(/fork_send_fd/, err.message)
    assert_match(/EBADF/, err.message)
    assert_equal Errno::EBADF::Errno, err.errno

    err = assert_raises(AnyFork::Error) { p.eval("") }
    assert_match(/fork_eval/, err.message)
    assert_equal Errno::EINVAL::Errno, err.errno

    err = assert_raises(AnyFork::Error) { p.run("") }
    assert_equal Errno::EINVAL::Errno, err.errno
    refute p.live?, "run consumes the process even when it fails"
    err = assert_raises(AnyFork::Error) { p.send_arg("x") }
    assert_match(/already run/, err.message)

    assert_raises(ArgumentError) { AnyFork.new.run("a\0b") }
  end

  def test_a_pointer_call_that_fails_raises_with_errno
    old = ENV["ANYFORK_SERVE"]
    ENV["ANYFORK_SERVE"] = "/nonexistent/anyfork-serve"
    err = assert_raises(AnyFork::Error) { AnyFork.new_exec }
    assert_match(%r{/nonexistent/anyfork-serve}, err.message)
    assert_equal Errno::ENOENT::Errno, err.errno
  ensure
    ENV["ANYFORK_SERVE"] = old
  end

  def test_a_missing_function_exits_127_saying_why
    Tempfile.create("anyfork-stderr") do |log|
      saved = STDERR.dup
      STDERR.reopen(log) # the server's stderr: it inherits fd 2
      t = begin
        AnyFork.new_exec
      ensure
        STDERR.reopen(saved)
        saved.close
      end
      p = t.fork
      seen = watch(p)
      p.run("no_such_function_anywhere") { |io| io&.close }
      assert_equal 127, exit_status(seen).exitstatus
      assert_match(/no function "no_such_function_anywhere"/, File.read(log.path))
      t.free
    end
  end

  def test_an_exception_in_a_callback_comes_out_of_wait
    AnyFork.new.send_arg("0").run("anyfork_exit") do |io|
      io.close
      raise "from the callback"
    end
    err = assert_raises(RuntimeError) { AnyFork.wait }
    assert_equal "from the callback", err.message
  end

  def test_an_event_loop_watching_loop_io
    got = []
    3.times do |i|
      AnyFork.new.eval("anyfork_comm_fd", "1").exec("echo", "loop #{i}") { |io| got << read_all(io) }
    end
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + LIMIT
    while got.size < 3 && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      AnyFork.dispatch if IO.select([AnyFork.loop_io], nil, nil, 1)
    end
    assert_equal ["loop 0\n", "loop 1\n", "loop 2\n"], got.sort
    assert_equal 0, AnyFork.pending
  end

  def test_many_at_once_through_blocks
    got = {}
    20.times do |i|
      AnyFork.new.eval("anyfork_comm_fd", "1").exec("echo", "n#{i}") { |io, err| got[i] = err || read_all(io) }
    end
    wait_until("20 outputs") { got.size == 20 }
    assert_equal (0...20).to_h { |i| [i, "n#{i}\n"] }, got
  end
end
