# frozen_string_literal: true

require_relative "lib"

class AnyFork
  # One RPC worker (fork_rpc_start): a process that runs a Ruby block or
  # method for each request, forked from a Ruby template.
  #
  #   rpc = AnyFork::RPC.new { |req| req * 2 }     # forks this program now
  #   rpc.call(21)                                 # => 42 (waits)
  #   rpc.call(1) { |reply, err| ... }             # from AnyFork.wait/dispatch
  #   rpc.close                                    # graceful
  #
  # Requests and replies are Ruby objects, marshalled (Marshal, or any
  # module with dump and load, e.g. JSON; serializer: nil sends Strings as
  # bytes). The library frames them, queues them without blocking, and
  # matches replies to calls (README, "RPC and pools").
  class RPC
    # What both RPC and Pool do on the caller's side: encode requests,
    # send them through the C call, decode replies, events and errors.
    module Caller
      # Sends req. With a block: returns nil, and the block gets
      # (reply, nil) or (nil, error) later, from AnyFork.wait or
      # AnyFork.dispatch. Without: dispatches until the reply came and
      # returns it, or raises the error. A call the library refuses (the
      # worker or pool is known to be gone) raises AnyFork::Error at once.
      def call(req, &block)
        h = live_handle
        payload = @codec.dump(req)
        box = nil
        cb = block || ->(r, e) { box = [r, e] }
        codec = @codec
        id = AnyFork.register(->(status, bytes, msg) { RPC.deliver(cb, codec, status, bytes, msg) })
        rc = c_call(h, payload, payload.bytesize, REPLY_CB, FFI::Pointer.new(id))
        if rc.negative?
          AnyFork.unregister(id)
          AnyFork.check(rc)
        end
        return nil if block

        RPC.dispatch_until { box }
        raise box[1] if box[1]

        box[0]
      end

      # Calls with each request at once; returns the replies in order, or
      # raises the first error.
      def map(reqs)
        reqs = reqs.to_a
        out = Array.new(reqs.size)
        left = reqs.size
        reqs.each_with_index do |r, i|
          call(r) do |v, e|
            out[i] = e ? [:error, e] : [:ok, v]
            left -= 1
          end
        end
        RPC.dispatch_until { left.zero? }
        out.map { |kind, v| kind == :error ? raise(v) : v }
      end

      # Frees it gracefully: calls made are still answered, then the
      # worker(s) read EOF and exit. Without a block, dispatches until
      # that is done and returns nil (or the Error saying how an RPC
      # worker had ended, when it ended otherwise); with one, returns at
      # once and the block gets that later.
      def close(&block)
        h = @handle or return nil
        @handle = nil
        ObjectSpace.undefine_finalizer(self)
        box = nil
        events = @event_id
        keep = @template
        id = AnyFork.register(lambda do |err|
          RPC.forget_events(events)
          keep&.free
          box = [err]
          block&.call(err)
        end)
        c_free(h, DESTROYED_CB, FFI::Pointer.new(id))
        return nil if block

        RPC.dispatch_until { box }
        box[0]
      end

      # True until #close.
      def live?
        !@handle.nil?
      end

      private

      def live_handle
        @handle or raise Error.new("#{self.class.name}: it was closed", Errno::EPIPE::Errno)
      end

      # Common set-up: the codec, the template holding the handler, and
      # the process (consumed) or template the C call takes.
      def setup(process, handler, serializer, async, on_event, block, own_template)
        @codec = Codec.for(serializer)
        key = handler_key(handler, block, process)
        if block
          Worker::HANDLERS[key] = block
          begin
            @template = AnyFork.template
          ensure
            Worker::HANDLERS.delete(key)
          end
          process = own_template ? @template.tap { @template = nil } : @template.fork
        end
        process.send_arg(key, @codec.name, async ? "async" : "sync")
        @event_id = RPC.remember_events(on_event, @codec)
        ptr = yield process.__send__(:consume), FFI::Pointer.new(@event_id || 0)
        if ptr.null?
          RPC.forget_events(@event_id)
          @template&.free
          raise AnyFork.last_error
        end
        @handle = ptr
        ObjectSpace.define_finalizer(self, RPC.finalizer(ptr, self.class::FREE))
      end

      def handler_key(handler, block, process)
        if block
          raise ArgumentError, "give a block or a handler name, not both" if handler
          raise ArgumentError, "a block runs in a copy of this program made now: pass no process " \
                               "(a process made before cannot hold the block)" if process

          "##{Process.pid}.#{RPC.next_key}"
        elsif handler.is_a?(String) || handler.is_a?(Symbol)
          raise ArgumentError, "a handler name needs a Ruby process or template" unless process

          handler.to_s
        else
          raise ArgumentError, "give a block (the worker's body) or a handler name (\"Mod.method\")"
        end
      end
    end

    include Caller

    # A worker's exception that could not be marshalled back: its class
    # name, message and backtrace (in the worker).
    class RemoteError < AnyFork::Error
      attr_reader :remote_class

      def initialize(remote_class, message, backtrace)
        super("#{remote_class}: #{message}", nil)
        @remote_class = remote_class
        set_backtrace(backtrace) if backtrace
      end
    end

    # Encodes requests, replies and events. Raw sends Strings as bytes.
    class Codec
      attr_reader :name

      def self.for(serializer)
        return new("", nil) if serializer.nil?

        unless serializer.is_a?(Module) && serializer.name &&
               serializer.respond_to?(:dump) && serializer.respond_to?(:load)
          raise ArgumentError, "serializer: a named module with dump and load (Marshal, JSON), " \
                               "or nil for bytes; not #{serializer.inspect}"
        end
        new(serializer.name, serializer)
      end

      # In the worker: the codec the caller named.
      def self.named(name)
        name.empty? ? new("", nil) : new(name, Object.const_get(name))
      end

      def initialize(name, mod)
        @name = name
        @mod = mod
      end

      def dump(obj)
        return @mod.dump(obj).b if @mod
        raise TypeError, "serializer: nil sends Strings only, not #{obj.class}" unless obj.is_a?(String)

        obj.b
      end

      def load(bytes)
        @mod ? @mod.load(bytes) : bytes
      end
    end

    # A reply's first byte (both ends are this file's).
    OK = 0
    RAISED = 1

    @events = {}
    @events_lock = Mutex.new
    @next_event = 0

    class << self
      # Runs a call's block with the decoded reply or the error.
      def deliver(cb, codec, status, bytes, msg)
        value = nil
        err = nil
        if status.negative?
          err = Error.new(msg, -status)
        else
          begin
            case bytes.getbyte(0)
            when OK then value = codec.load(bytes.byteslice(1..))
            when RAISED then err = remote_error(bytes.byteslice(1..))
            else err = Error.new("a reply that is not from AnyFork's worker (#{bytes.bytesize} bytes)",
                                 Errno::EPROTO::Errno)
            end
          rescue Exception => e # rubocop:disable Lint/RescueException
            err = e
          end
        end
        AnyFork.__send__(:call_block, cb, value, err)
      end

      # The worker's exception, as itself when it could be marshalled.
      def remote_error(bytes)
        exc, klass, message, backtrace = Marshal.load(bytes) # rubocop:disable Security/MarshalLoad
        return exc.tap { |e| e.set_backtrace(backtrace) if backtrace } if exc.is_a?(Exception)

        RemoteError.new(klass, message, backtrace)
      end

      # Dispatches (this thread) until the block is true.
      def dispatch_until
        until yield
          AnyFork.__send__(:wait_slice, nil)
          AnyFork.__send__(:raise_callback_error)
        end
      end

      def remember_events(on_event, codec)
        return nil unless on_event
        raise ArgumentError, "on_event must respond to call" unless on_event.respond_to?(:call)

        @events_lock.synchronize do
          @next_event += 1
          @events[@next_event] = [on_event, codec]
          @next_event
        end
      end

      def forget_events(id)
        @events_lock.synchronize { @events.delete(id) } if id
      end

      def event_arrived(id, bytes)
        on_event, codec = @events_lock.synchronize { @events[id] }
        return unless on_event

        on_event.call(codec.load(bytes))
      rescue Exception => e # rubocop:disable Lint/RescueException
        AnyFork.__send__(:callback_failed, e)
      end

      # A handle dropped without #close is freed (gracefully) by the
      # garbage collector, in the process that made it only.
      def finalizer(ptr, free)
        owner = Process.pid
        ->(_) { free.call(ptr, nil, nil) if Process.pid == owner }
      end

      def next_key
        @events_lock.synchronize { @next_key = (@next_key || 0) + 1 }
      end

      # In a worker: sends an event (any object the serializer takes) to
      # the caller's on_event, in order with the replies. Call it while a
      # request is being handled (or, async, before its reply).
      def event(obj) = Worker.event(obj)
    end

    REPLY_CB = FFI::Function.new(:void, %i[int pointer size_t pointer]) do |status, data, len, ud|
      bytes = status.negative? || len.zero? || data.null? ? "".b : data.read_bytes(len)
      msg = status.negative? ? Lib.fork_last_error : nil
      block = AnyFork.unregister(ud.address)
      begin
        block&.call(status, bytes, msg)
      rescue Exception => e # rubocop:disable Lint/RescueException
        AnyFork.__send__(:callback_failed, e)
      end
    end

    EVENT_CB = FFI::Function.new(:void, %i[pointer size_t pointer]) do |data, len, ud|
      RPC.event_arrived(ud.address, len.zero? || data.null? ? "".b : data.read_bytes(len))
    end

    DESTROYED_CB = FFI::Function.new(:void, %i[int pointer]) do |status, ud|
      err = status.negative? ? Error.new(Lib.fork_last_error, -status) : nil
      block = AnyFork.unregister(ud.address)
      begin
        block&.call(err)
      rescue Exception => e # rubocop:disable Lint/RescueException
        AnyFork.__send__(:callback_failed, e)
      end
    end

    # AnyFork::RPC.new { |req| reply } forks this program now as a
    # template and one worker from it, which runs the block for each
    # request. AnyFork::RPC.new(process, "Mod.method") runs that method
    # instead, in a process (consumed) forked from a Ruby template
    # (AnyFork.template, AnyFork.new_ruby). async: true hands the block
    # (or method) a second argument, a Reply to answer with later, from
    # any thread: |req, reply| Thread.new { reply.(work(req)) }.
    # on_event gets what the worker sends with AnyFork::RPC.event.
    def initialize(process = nil, handler = nil, async: false, serializer: Marshal, on_event: nil, &block)
      setup(process, handler, serializer, async, on_event, block, false) do |p, ev|
        Lib.fork_rpc_start(p, "AnyFork::RPC::Worker.serve", on_event ? EVENT_CB : nil, ev)
      end
    end

    def inspect
      "#<AnyFork::RPC #{live? ? 'live' : 'closed'}>"
    end

    FREE = Lib.method(:fork_rpc_free)

    private

    def c_call(*args) = Lib.fork_rpc_call(*args)
    def c_free(*args) = Lib.fork_rpc_free(*args)
  end
end
