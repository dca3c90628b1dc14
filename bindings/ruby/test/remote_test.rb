# frozen_string_literal: true

require_relative "helper"

# Remote templates (AnyFork.new_remote) through a local transport,
# `sh -c 'exec anyfork-serve --stdio'`, which speaks what
# `ssh host anyfork-serve --stdio` does (tests/remote_ssh.rs covers ssh).
class RemoteTest < Minitest::Test
  include AnyForkTestHelper

  LOCAL = ["sh", "-c", 'exec "$0" --stdio "$@"', ENV.fetch("ANYFORK_SERVE", "anyfork-serve")].freeze

  def test_builtins_pids_and_exit_statuses_come_from_the_far_side
    t = AnyFork.new_remote(*LOCAL)
    p = t.fork
    seen = watch(p)
    out = read_all(p.eval("anyfork_comm_fd", "1").exec("sh", "-c", "echo $$; exit 6"))
    st = exit_status(seen)
    assert_equal [out.to_i, 6], [seen[:pid], st.exitstatus]
    t.free
  end

  def test_send_io_is_refused_and_the_process_still_runs
    t = AnyFork.new_remote(*LOCAL)
    p = t.fork.send_arg("3")
    err = assert_raises(AnyFork::Error) { File.open("/dev/null") { |f| p.send_io(f) } }
    assert_match(/cannot cross machines/, err.message)
    seen = watch(p)
    p.run("anyfork_exit") { |io| io.close }
    assert_equal 3, exit_status(seen).exitstatus
    t.free
  end

  def test_a_failed_start_says_why
    err = assert_raises(AnyFork::Error) { AnyFork.new_remote("sh", "-c", "echo no route >&2; exit 255") }
    assert_match(/status 255.*no route/, err.message)
  end

  def test_ruby_methods_in_a_remote_ruby_template
    lib = File.expand_path("../lib", __dir__)
    s = AnyFork.new_remote_ruby(*LOCAL, ruby: [RbConfig.ruby, "-I", lib])
    s.ruby_require(File.expand_path("support/server_worker", __dir__))
    p = s.fork.send_arg("far")
    pid = p.pid
    assert_match(/\Ahello far from #{pid} /, read_all(p.run("ServerWorker.greet")))
    s.free
  end
end
