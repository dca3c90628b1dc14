# frozen_string_literal: true

require_relative "lib"

class AnyFork
  class RPC
    # The worker's side of AnyFork::RPC and AnyFork::Pool, in a process
    # forked from a Ruby template: the C library's fork_rpc_serve reads the
    # requests and writes the replies; each request calls the handler (the
    # block, or the named method) with the decoded request.
    module Worker
      # Blocks to run, by key: registered in the caller just before it
      # copies itself as the template, so the copy has them.
      HANDLERS = {}

      # An async handler's way to answer: reply.(value) or
      # reply.fail(exception), once, from any thread.
      class Reply
        def initialize(worker, id, codec)
          @worker = worker
          @id = id
          @codec = codec
          @lock = Mutex.new
          @done = false
        end

        def call(value)
          send_once { OK.chr.b + @codec.dump(value) }
        end
        alias reply call

        def fail(exc)
          send_once { Worker.error_payload(exc) }
        end

        def done?
          @lock.synchronize { @done }
        end

        private

        def send_once
          out = begin
            yield
          rescue Exception => e # rubocop:disable Lint/RescueException
            Worker.error_payload(e)
          end
          @lock.synchronize do
            raise Error.new("this request was answered already", Errno::EINVAL::Errno) if @done

            @done = true
          end
          AnyFork.check(Lib.fork_rpc_reply(@worker, @id, out, out.bytesize))
          nil
        end
      end

      class << self
        # The run function (AnyFork::Child's dispatcher calls it): serves
        # until the caller closes its side and every reply is written.
        def serve(io, key, codec_name, mode)
          @handler = handler_for(key)
          @codec = Codec.named(codec_name)
          @async = mode == "async"
          @worker = nil
          rc = Lib.fork_rpc_serve(io.fileno, HANDLER, nil, @async ? Lib::FORK_RPC_ASYNC : 0)
          raise Error.new("fork_rpc_serve: #{Lib.fork_last_error}", -rc) if rc.negative?

          io.close
        end

        # One request (the C handler's call; never raises).
        def handle(worker, id, bytes)
          @worker = worker
          if @async
            reply = Reply.new(worker, id, @codec)
            begin
              @handler.call(@codec.load(bytes), reply)
            rescue Exception => e # rubocop:disable Lint/RescueException
              reply.fail(e) unless reply.done?
            end
          else
            out = begin
              OK.chr.b + @codec.dump(@handler.call(@codec.load(bytes)))
            rescue Exception => e # rubocop:disable Lint/RescueException
              error_payload(e)
            end
            Lib.fork_rpc_reply(worker, id, out, out.bytesize)
          end
        rescue Exception => e # rubocop:disable Lint/RescueException
          $stderr.write("anyfork[#{Process.pid}]: rpc worker: #{e.full_message(highlight: false)}")
        end

        def event(obj)
          w = current("AnyFork::RPC.event")
          data = @codec.dump(obj)
          AnyFork.check(Lib.fork_rpc_event(w, data, data.bytesize))
          nil
        end

        def retire
          AnyFork.check(Lib.fork_pool_retire(current("AnyFork::Pool.retire")))
          nil
        end

        # An exception as a reply: itself marshalled when it can be, and
        # its class name, message and backtrace in any case.
        def error_payload(exc)
          bt = exc.backtrace
          cut = bt&.index { |f| f.include?("/anyfork/rpc_worker.rb:") }
          bt = bt[0...cut] if cut
          fields = [exc.class.name, exc.message, bt]
          body = begin
            Marshal.dump([exc, *fields])
          rescue StandardError
            Marshal.dump([nil, *fields])
          end
          RAISED.chr.b + body
        end

        private

        def current(what)
          @worker or raise Error.new("#{what}: not in an RPC worker handling a request", Errno::EINVAL::Errno)
        end

        def handler_for(key)
          return HANDLERS.fetch(key) { raise ArgumentError, "no RPC handler #{key} in this process" } if key.start_with?("#")

          target = Child.__send__(:resolve, key)
          raise ArgumentError, "no Ruby method #{key.inspect} for the RPC worker" unless target

          target
        end
      end

      HANDLER = FFI::Function.new(:void, %i[pointer uint32 pointer size_t pointer]) do |w, id, req, len, _ud|
        Worker.handle(w, id, len.zero? || req.null? ? "".b : req.read_bytes(len))
      end
    end
  end
end
