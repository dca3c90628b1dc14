# frozen_string_literal: true

require_relative "helper"

# 1,000 creations leave no fd and no process behind.
class LeakTest < Minitest::Test
  include AnyForkTestHelper

  def test_no_fd_leak_after_1000_creations
    warm = AnyFork.new.send_arg("0").run("anyfork_exit") # default template up
    read_all(warm)
    template
    GC.start
    before = fd_table

    done = 0
    1000.times do |i|
      case i % 4
      when 0 # run, socket closed in the block
        AnyFork.new.send_arg("0").run("anyfork_exit") { |io| io.close; done += 1 }
      when 1 # exec builtin with an fd sent
        File.open("/dev/null") do |null|
          AnyFork.new.send_io(null).exec("true") { |io| io.close; done += 1 }
        end
      when 2 # never run: freed by the garbage collector
        AnyFork.new.send_arg("unused")
        done += 1
      when 3 # a Ruby worker in a copy of this interpreter
        template.fork.send_arg("x").run("TestWorkers.echo") { |io| read_all(io); done += 1 }
      end
      AnyFork.wait if (i % 50) == 49
    end
    wait_until("1,000 creations") { done == 1000 }
    GC.start
    AnyFork.wait(1)
    # Objects of earlier tests may close fds meanwhile; none may be new.
    # (The shared template's processes forked ahead hold sockets, new ones
    # as they are handed out: let them go first.)
    template.fork_ahead(0)
    assert_empty new_fds(before), "fds opened by 1,000 creations and still open"
    assert_equal 0, AnyFork.pending
  ensure
    template.fork_ahead(2)
  end

  # Handles dropped without #run: the garbage collector frees them and the
  # processes exit. (Ruby scans the machine stack conservatively, so a
  # stray reference may keep one or two alive: most must go.)
  def test_handles_are_freed_by_the_garbage_collector
    seen = abandon_processes(10)
    clobber_stack
    3.times { GC.start(full_mark: true, immediate_sweep: true) }
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    while seen.count { |s| s[:status] } < 8 && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      AnyFork.wait(0.2)
    end
    done = seen.select { |s| s[:status] }
    assert_operator done.size, :>=, 8, "processes freed by the garbage collector"
    done.each { |s| assert s[:status].success?, s[:status].inspect }
  end

  def test_no_children_left_but_the_templates
    AnyFork.new.send_arg("0").run("anyfork_exit").close # default template up
    before = live_children
    got = 0
    50.times { AnyFork.new.send_arg("0").run("anyfork_exit") { |io| io.close; got += 1 } }
    wait_until("50 runs") { got == 50 }
    AnyFork.wait(0.5)
    # Forked processes belong to their templates, which reap them.
    assert_empty live_children - before
  end

  private

  def abandon_processes(n)
    Array.new(n) do
      seen = {}
      AnyFork.new.send_arg("unused").on_exit { |pid, st| seen[:pid] = pid; seen[:status] = st }
      seen
    end
  end

  def clobber_stack(depth = 200)
    filler = Array.new(8) { Object.new }
    clobber_stack(depth - 1) if depth.positive?
    filler.size
  end
end
