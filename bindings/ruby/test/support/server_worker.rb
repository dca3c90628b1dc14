# frozen_string_literal: true

# Loaded into a fresh Ruby server (AnyFork.new_ruby) with #ruby_require.
module ServerWorker
  LOADED_IN = Process.pid

  def self.greet(io, name)
    sleep 0.01
    require "timeout"
    t = (Timeout.timeout(0.05) { sleep 1 } rescue $!.class)
    io.write("hello #{name} from #{Process.pid} (loaded in #{LOADED_IN}) #{t}")
  end
end

# An RPC handler by name (AnyFork::Pool.new(template, "RpcWorker.double")).
module RpcWorker
  def self.double(req)
    AnyFork::RPC.event("doubling #{req}")
    [Process.pid, req * 2]
  end
end
