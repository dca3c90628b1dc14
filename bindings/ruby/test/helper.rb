# frozen_string_literal: true

# Shared by the tests: load the binding from this tree and minitest.
$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
$LOAD_PATH.unshift File.expand_path("support", __dir__)
require "minitest/autorun"
require "timeout"
require "tempfile"
require "tmpdir"
require "anyfork"
require "workers"

module AnyForkTestHelper
  LIMIT = 30 # seconds for any one read or wait

  # Reads an IO to EOF and closes it.
  def read_all(io)
    Timeout.timeout(LIMIT) { io.read }
  ensure
    io&.close
  end

  # Waits until the block is true, dispatching callbacks.
  def wait_until(what)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + LIMIT
    until yield
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      flunk "#{what} did not happen within #{LIMIT} s" if left <= 0
      AnyFork.wait(left)
    end
  end

  # Registers an exit callback; returns a Hash that gets :pid and :status.
  def watch(proc_)
    seen = {}
    proc_.on_exit { |pid, st| seen[:pid] = pid; seen[:status] = st }
    seen
  end

  def exit_status(seen)
    wait_until("the exit") { seen[:status] }
    seen[:status]
  end

  # The one template forked from this test process (made on first use,
  # after the workers are loaded and while there is one thread).
  def template
    AnyForkTestHelper.template
  end

  def self.template
    @template ||= AnyFork.template
  end

  def open_fds
    Dir.children("/proc/self/fd").size
  end

  # This process's fds and what each one is ("socket:[1234]", a path),
  # to tell a leaked fd from one an earlier test's object closed meanwhile.
  def fd_table
    Dir.children("/proc/self/fd").to_h do |fd|
      [fd.to_i, (File.readlink("/proc/self/fd/#{fd}") rescue nil)]
    end.compact
  end

  # The fds in `now` that were not open (or were something else) in `before`.
  def new_fds(before, now = fd_table)
    now.reject { |fd, what| before[fd] == what }
  end

  # Live (non-zombie) children of this process.
  def live_children
    Dir.children("/proc").grep(/\A\d+\z/).select do |pid|
      stat = File.read("/proc/#{pid}/stat") rescue next
      fields = stat[(stat.rindex(")") + 2)..].split
      fields[1].to_i == Process.pid && fields[0] != "Z"
    end.map(&:to_i)
  end
end
