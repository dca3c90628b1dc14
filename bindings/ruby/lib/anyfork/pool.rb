# frozen_string_literal: true

require_relative "rpc"

class AnyFork
  # A pool of RPC workers (fork_pool_new), forked from one Ruby template on
  # demand, with AnyEvent::Fork::Pool's settings: at most max workers
  # (default: the number of CPUs), idle kept ready, load requests in
  # flight per worker, start seconds between starting workers while all
  # are busy, stop seconds before an idle spare stops, and retire_after N
  # requests. Each call goes to the least-loaded worker or waits in the
  # pool's queue; a worker that dies fails only its own calls (each once)
  # and is replaced.
  #
  #   pool = AnyFork::Pool.new(max: 4) { |req| heavy(req) }  # forks this program now
  #   pool.call(x) { |reply, err| ... }   # or pool.call(x): waits, returns
  #   pool.map(xs)                        # replies in order
  #   pool.close                          # graceful
  class Pool
    include RPC::Caller

    SETTINGS = %i[max idle load start stop retire_after].freeze

    # Pool.new(**settings) { |req| reply } copies this program now as the
    # pool's template, so the block runs in the workers. Pool.new(template,
    # "Mod.method", **settings) takes a Ruby template made before
    # (consumed). async:, serializer:, on_event: as for AnyFork::RPC.
    def initialize(template = nil, handler = nil, async: false, serializer: Marshal, on_event: nil, **settings, &block)
      unknown = settings.keys - SETTINGS
      raise ArgumentError, "unknown pool setting(s) #{unknown.join(', ')}; known: #{SETTINGS.join(', ')}" unless unknown.empty?

      opts = Lib.fork_pool_defaults
      settings.each do |k, v|
        raise ArgumentError, "#{k} must be a number >= 0, not #{v.inspect}" unless v.is_a?(Numeric) && v >= 0

        opts[k] = v
      end
      setup(template, handler, serializer, async, on_event, block, true) do |t, ev|
        Lib.fork_pool_new(t, "AnyFork::RPC::Worker.serve", opts, on_event ? RPC::EVENT_CB : nil, ev)
      end
    end

    # The number of workers now (retiring ones included).
    def workers
      Lib.fork_pool_workers(live_handle)
    end

    # In a pool's worker: asks to be retired (it answers what it has, takes
    # nothing new, and the pool replaces it).
    def self.retire = RPC::Worker.retire

    def inspect
      "#<AnyFork::Pool #{live? ? "#{workers} workers" : 'closed'}>"
    end

    FREE = Lib.method(:fork_pool_free)

    private

    def c_call(*args) = Lib.fork_pool_call(*args)
    def c_free(*args) = Lib.fork_pool_free(*args)
  end
end
