# frozen_string_literal: true

require "ffi"

class AnyFork
  # libanyfork's C API as the ffi gem sees it (include/anyfork.h). Nothing
  # here has logic of its own; AnyFork wraps it.
  module Lib
    extend FFI::Library

    LIB_NAME = "libanyfork.so.0"
    DEFAULT_DIRS = ["/usr/local/lib", "/usr/local/lib64"].freeze

    # The library's directory as `pkg-config --variable=libdir anyfork`
    # gave it when the installed gem was built (its metadata
    # "anyfork_libdir"), or nil (run from the source tree, or no answer
    # then).
    def self.install_libdir
      spec = defined?(Gem) && Gem.loaded_specs["anyfork"]
      return nil unless spec && __dir__.start_with?(File.join(spec.full_gem_path, ""))

      dir = spec.metadata["anyfork_libdir"]
      dir.nil? || dir.empty? ? nil : dir
    end

    # Where libanyfork may be, in order: $ANYFORK_LIB (a file, a directory
    # holding libanyfork.so.0, or a bare name for the dynamic linker), else
    # libanyfork.so.0 through the dynamic linker, else in install_libdir,
    # else under /usr/local (make install's default prefix, before
    # ldconfig has run).
    def self.candidates
      env = ENV.fetch("ANYFORK_LIB", "")
      if env.empty?
        dirs = ([install_libdir].compact - DEFAULT_DIRS) + DEFAULT_DIRS
        return [LIB_NAME] + dirs.map { |d| File.join(d, LIB_NAME) }
      end
      return [File.join(env, LIB_NAME), File.join(env, "libanyfork.so")] if File.directory?(env)

      [env]
    end

    # The first candidate that loads; the LoadError lists each one tried.
    def self.load_library
      tried = []
      candidates.each do |path|
        ffi_lib path
        return path
      rescue LoadError => e
        tried << e.message.lines.first.chomp
      end
      env = ENV.fetch("ANYFORK_LIB", "")
      origin =
        if !env.empty? then "ANYFORK_LIB=#{env}"
        elsif install_libdir then "ANYFORK_LIB unset, libdir #{install_libdir} from pkg-config at install"
        else "ANYFORK_LIB unset, no libdir from pkg-config at install"
        end
      raise LoadError, "anyfork: cannot load libanyfork (#{origin}); tried #{tried.join("; ")}. " \
                       "Install it with `make install`, or set ANYFORK_LIB to the library or its directory"
    end

    # The library actually loaded (a path, or libanyfork.so.0).
    PATH = load_library

    FORK_ARG_STRING = 0
    FORK_ARG_FD = 1
    FORK_CALL_EVAL = 0
    FORK_CALL_RUN = 1
    # fork_template_flags: the program's fds stay open in the copy.
    FORK_TEMPLATE_KEEP_FDS = 1
    # What a dispatcher returns for a name it leaves to dlsym.
    FORK_DISPATCH_PASS = -2**31

    # struct fork_arg.
    class Arg < FFI::Struct
      layout :kind, :int,
             :fd, :int,
             :data, :pointer,
             :len, :size_t
    end

    # fork_rpc_serve: the handler may reply later, from any thread.
    FORK_RPC_ASYNC = 1

    # struct fork_pool_opts.
    class PoolOpts < FFI::Struct
      layout :max, :uint,
             :idle, :uint,
             :load, :uint,
             :start, :double,
             :stop, :double,
             :retire_after, :uint64
    end

    callback :run_cb, %i[int pointer], :void
    callback :rpc_reply_cb, %i[int pointer size_t pointer], :void
    callback :rpc_event_cb, %i[pointer size_t pointer], :void
    callback :rpc_destroyed_cb, %i[int pointer], :void
    callback :rpc_handler, %i[pointer uint32 pointer size_t pointer], :void
    callback :exit_cb, %i[pid_t int pointer], :void
    callback :dispatch_fn, %i[int pointer int pointer size_t pointer], :int
    callback :fork_hook_fn, [:pointer], :int

    attach_function :fork_new, [], :pointer
    attach_function :fork_new_exec, [], :pointer
    attach_function :fork_new_exec_argv, [:pointer], :pointer
    attach_function :fork_new_remote, [:pointer], :pointer
    # Not blocking: the copy it makes runs Ruby code (the dispatcher) on
    # this very thread, which must hold the GVL there as it does here.
    attach_function :fork_template_flags, [:uint], :pointer
    attach_function :fork_fork, [:pointer], :pointer
    attach_function :fork_ahead, %i[pointer uint], :int
    attach_function :fork_send_fd, %i[pointer int], :int
    attach_function :fork_send_arg, %i[pointer buffer_in size_t], :int
    attach_function :fork_require, %i[pointer string], :int
    attach_function :fork_eval_n, %i[pointer string pointer pointer size_t], :int
    attach_function :fork_run, %i[pointer string run_cb pointer], :int
    attach_function :fork_exec, %i[pointer pointer pointer run_cb pointer], :int
    attach_function :fork_on_exit, %i[pointer exit_cb pointer], :int
    # May wait up to 10 s for a template's report: let other threads run.
    attach_function :fork_pid, [:pointer], :pid_t, blocking: true
    attach_function :fork_free, [:pointer], :void
    attach_function :fork_last_error, [], :string
    attach_function :fork_last_errno, [], :int
    attach_function :fork_loop_fd, [], :int
    attach_function :fork_loop_dispatch, [], :int
    # Blocks: other Ruby threads run meanwhile; callbacks take the GVL back.
    attach_function :fork_wait, [:int], :int, blocking: true
    attach_function :fork_pending, [], :size_t
    attach_function :fork_set_dispatch, %i[dispatch_fn pointer], :void
    attach_function :fork_set_fork_hook, %i[fork_hook_fn pointer], :void
    # In a child of Kernel#fork: forget the parent's sockets and callbacks.
    attach_function :fork_reset_after_fork, [], :void
    # Never returns in a working server, which runs Ruby in its children.
    attach_function :fork_serve, [:int], :int

    # RPC and pools (AnyFork::RPC, AnyFork::Pool).
    attach_function :fork_rpc_start, %i[pointer string rpc_event_cb pointer], :pointer
    attach_function :fork_rpc_call, %i[pointer buffer_in size_t rpc_reply_cb pointer], :int
    attach_function :fork_rpc_free, %i[pointer rpc_destroyed_cb pointer], :void
    attach_function :fork_pool_defaults, [], PoolOpts.by_value
    attach_function :fork_pool_new, [:pointer, :string, PoolOpts.by_ref, :rpc_event_cb, :pointer], :pointer
    attach_function :fork_pool_call, %i[pointer buffer_in size_t rpc_reply_cb pointer], :int
    attach_function :fork_pool_workers, [:pointer], :int
    attach_function :fork_pool_free, %i[pointer rpc_destroyed_cb pointer], :void
    # The worker's side. fork_rpc_serve blocks reading requests: other
    # Ruby threads (an async worker's) run meanwhile, and the handler
    # takes the GVL back. Replies may wait for the socket: blocking too.
    attach_function :fork_rpc_serve, %i[int rpc_handler pointer int], :int, blocking: true
    attach_function :fork_rpc_reply, %i[pointer uint32 buffer_in size_t], :int, blocking: true
    attach_function :fork_rpc_event, %i[pointer buffer_in size_t], :int, blocking: true
    attach_function :fork_pool_retire, [:pointer], :int, blocking: true
  end
end
