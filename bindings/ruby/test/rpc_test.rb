# frozen_string_literal: true

require_relative "helper"

# Issue 13: AnyFork::RPC and AnyFork::Pool, Ruby workers (blocks or named
# methods) in processes forked from a Ruby template, on the C library's
# RPC and pools.
class RpcTest < Minitest::Test
  include AnyForkTestHelper

  # A process (not a zombie) with this pid exists.
  def alive?(pid)
    stat = File.read("/proc/#{pid}/stat")
    stat[(stat.rindex(")") + 2)] != "Z"
  rescue Errno::ENOENT, Errno::ESRCH
    false
  end

  def assert_all_gone(pids)
    deadline = now + 10
    sleep 0.02 while pids.any? { |pid| alive?(pid) } && now < deadline
    assert_empty pids.select { |pid| alive?(pid) }, "workers left behind"
  end

  def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # Dispatches until the block is true.
  def spin(what, limit = LIMIT)
    deadline = now + limit
    until yield
      flunk "#{what} did not happen within #{limit} s" if now > deadline
      AnyFork.dispatch
      sleep 0.005
    end
  end

  def test_replies_come_in_order_with_events_between
    seen = []
    rpc = AnyFork::RPC.new(on_event: ->(ev) { seen << [:event, ev] }) do |n|
      AnyFork::RPC.event("start #{n}") if n.even?
      [Process.pid, n * n]
    end
    100.times { |n| rpc.call(n) { |reply, err| seen << [:reply, err || reply.last] } }
    spin("100 replies") { seen.count { |k, _| k == :reply } == 100 }
    expected = 100.times.flat_map { |n| (n.even? ? [[:event, "start #{n}"]] : []) + [[:reply, n * n]] }
    assert_equal expected, seen
    pid, sq = rpc.call(12) # no block: waits and returns
    assert_equal 144, sq
    refute_equal Process.pid, pid
    assert_nil rpc.close
    refute rpc.live?
    assert_all_gone([pid])
  end

  def test_a_worker_that_raises_fails_that_call_only
    rpc = AnyFork::RPC.new do |req|
      raise KeyError, "no #{req}" if req.start_with?("bad")
      raise Class.new(StandardError), "anonymous" if req == "odd" # cannot be marshalled

      [Process.pid, req.upcase]
    end
    got = []
    %w[a bad1 b].each { |r| rpc.call(r) { |reply, err| got << (err || reply) } }
    spin("three answers") { got.size == 3 }
    assert_equal "A", got[0].last
    assert_kind_of KeyError, got[1]
    assert_equal "no bad1", got[1].message
    assert_match(/rpc_test\.rb/, got[1].backtrace.first, "the worker's backtrace")
    assert_equal got[0].first, got[2].first, "the same worker went on"
    err = assert_raises(AnyFork::RPC::RemoteError) { rpc.call("odd") }
    assert_match(/anonymous/, err.message)
    err = assert_raises(KeyError) { rpc.call("bad2") } # no block: raised here
    assert_equal "no bad2", err.message
    rpc.close
    assert_all_gone([got[0].first])
  end

  def test_async_workers_answer_out_of_order_from_threads
    order = []
    pool = AnyFork::Pool.new(max: 1, load: 10, async: true, on_event: ->(e) { order << e }) do |x, reply|
      raise ArgumentError, "negative" if x.negative?

      Thread.new do
        sleep x * 0.2
        AnyFork::RPC.event("done #{x}")
        reply.(x * 10)
      end
    end
    [3, 1, -1, 2].each { |x| pool.call(x) { |v, e| order << (e ? e.message : v) } }
    spin("four answers and three events") { order.size == 7 }
    assert_equal ["negative", "done 1", 10, "done 2", 20, "done 3", 30], order,
                 "each reply when its thread answered, after the event it sent first"
    assert_nil pool.close
  end

  def test_a_killed_worker_fails_its_calls_once_and_is_replaced
    started = {}
    pool = AnyFork::Pool.new(max: 2, idle: 2, load: 5, on_event: ->(pid) { started[pid] = true }) do |sec|
      AnyFork::RPC.event(Process.pid)
      sleep sec
      Process.pid
    end
    spin("two workers") { pool.workers == 2 }
    results = Hash.new { |h, k| h[k] = [] }
    10.times { |i| pool.call(0.5) { |pid, err| results[i] << (err || pid) } }
    spin("both workers busy") { started.size == 2 }
    victim = started.keys.min
    Process.kill(:KILL, victim)
    spin("every call ended") { results.size == 10 }
    sleep 0.3
    AnyFork.dispatch
    assert(results.values.all? { |r| r.size == 1 }, "each call ended once: #{results.inspect}")
    errors = results.values.flatten.grep(Exception)
    by_victim = results.values.flatten.count(victim)
    assert_equal 5 - by_victim, errors.size, "the victim's unanswered calls failed"
    assert_operator errors.size, :>=, 3
    errors.each do |e|
      assert_kind_of AnyFork::Error, e
      assert_includes [Errno::EPIPE::Errno, Errno::ECONNRESET::Errno], e.errno, e.message
    end
    after = pool.map([0] * 4)
    refute_includes after, victim
    assert_equal 2, pool.workers, "the pool replaced it"
    pool.close
    assert_all_gone(started.keys + after)
  end

  def test_a_killed_rpc_worker_fails_its_calls_and_refuses_new_ones
    pids = []
    rpc = AnyFork::RPC.new(on_event: ->(pid) { pids << pid }) do |_|
      AnyFork::RPC.event(Process.pid)
      sleep 30
    end
    errs = []
    20.times { rpc.call(nil) { |_, e| errs << e } }
    spin("the first call") { pids.size == 1 }
    Process.kill(:KILL, pids.first)
    spin("20 errors") { errs.size == 20 }
    assert(errs.all? { |e| e.is_a?(AnyFork::Error) })
    spin("a later call fails") do
      rpc.call(nil) { |_, e| errs << e }
      false
    rescue AnyFork::Error => e
      assert_equal Errno::EPIPE::Errno, e.errno
      true
    end
    err = rpc.close
    assert_kind_of AnyFork::Error, err, "close says the worker had ended otherwise"
    assert_all_gone(pids)
  end

  def test_retire_from_the_worker_and_after_n_calls
    pool = AnyFork::Pool.new(max: 1, load: 1) do |x|
      @n = (@n || 0) + 1
      AnyFork::Pool.retire if @n == 3
      Process.pid
    end
    pids = pool.map(1..9)
    assert_equal [3, 3, 3], pids.tally.values
    pool.close
    pool = AnyFork::Pool.new(max: 1, load: 1, retire_after: 2) { |_| Process.pid }
    pids2 = pool.map(1..8)
    assert_equal [2, 2, 2, 2], pids2.tally.values
    pool.close
    assert_all_gone(pids + pids2)
  end

  def test_the_pool_grows_under_load_and_shrinks_when_idle
    pool = AnyFork::Pool.new(max: 3, idle: 0, load: 1, start: 0, stop: 0.3) do |sec|
      sleep sec
      Process.pid
    end
    assert_equal 0, pool.workers
    most = 0
    got = []
    6.times { pool.call(0.4) { |pid, e| got << (e || pid) } }
    spin("three workers") { most = [most, pool.workers].max; most == 3 }
    spin("six answers") { got.size == 6 }
    assert_equal 3, got.uniq.size
    spin("idle workers stop", 5) { pool.workers.zero? }
    pool.close
    assert_all_gone(got)
  end

  def test_close_is_graceful
    pool = AnyFork::Pool.new(max: 2) { |x| [Process.pid, x + 1] }
    got = []
    50.times { |i| pool.call(i) { |r, e| got << (e || r.last) } }
    closed = nil
    assert_nil(pool.close { |err| closed = [err] })
    assert_raises(AnyFork::Error) { pool.call(1) }
    spin("closed") { closed }
    assert_equal (1..50).to_a, got.sort
    assert_equal [nil], closed
  end

  def test_a_named_handler_in_a_fresh_ruby_server
    dir = File.expand_path("support", __dir__)
    tmpl = AnyFork.new_ruby("-I", File.expand_path("../lib", __dir__)).ruby_require(File.join(dir, "server_worker.rb"))
    events = []
    pool = AnyFork::Pool.new(tmpl, "RpcWorker.double", max: 1, on_event: ->(e) { events << e })
    pid, four = pool.call(2)
    assert_equal 4, four
    assert_equal ["doubling 2"], events
    assert_equal [6, 8], pool.map([3, 4]).map(&:last)
    pool.close
    assert_all_gone([pid])
  end

  def test_bytes_with_serializer_nil
    rpc = AnyFork::RPC.new(serializer: nil) { |b| b.reverse }
    assert_equal "\xff\x00ab".b, rpc.call("ba\x00\xff".b)
    assert_raises(TypeError) { rpc.call(42) }
    rpc.close
  end

  def test_bad_arguments_are_refused_with_the_reason
    e = assert_raises(ArgumentError) { AnyFork::Pool.new(maxx: 2) { |x| x } }
    assert_match(/unknown pool setting.*maxx/, e.message)
    e = assert_raises(ArgumentError) { AnyFork::Pool.new(load: "many") { |x| x } }
    assert_match(/load must be a number/, e.message)
    e = assert_raises(AnyFork::Error) { AnyFork::Pool.new(max: 0) { |x| x } }
    assert_match(/max/, e.message)
    assert_raises(ArgumentError) { AnyFork::RPC.new(serializer: Object.new) { |x| x } }
    e = assert_raises(ArgumentError) { AnyFork::RPC.new(AnyFork.new) { |x| x } }
    assert_match(/pass no process/, e.message)
    assert_raises(ArgumentError) { AnyFork::RPC.new }
    e = assert_raises(AnyFork::Error) { AnyFork::RPC.event("x") }
    assert_match(/not in an RPC worker/, e.message)
  end
end
