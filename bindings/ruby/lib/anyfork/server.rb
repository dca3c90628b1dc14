# frozen_string_literal: true

# The Ruby template server that AnyFork.new_ruby spawns (through
# fork_new_exec_argv): a fresh interpreter serving on the socket named by
# $ANYFORK_FD, whose processes run Ruby methods through the dispatcher.

# The server loop learns of its children's exits through a signalfd for
# SIGCHLD, which it blocks in its own thread only. The ffi gem starts a
# thread of its own (its callback dispatcher) when the first callback is
# made: block SIGCHLD before that, so the new thread inherits the mask and
# cannot take the signal away from the signalfd. (Processes forked from
# the server get an empty mask back before Ruby code runs.)
require "ffi"

module AnyForkServerSignals
  extend FFI::Library
  ffi_lib FFI::Library::LIBC
  attach_function :sigprocmask, %i[int pointer pointer], :int
  SIG_BLOCK = 0

  def self.block(name)
    set = FFI::MemoryPointer.new(:uint8, 128) # sigset_t
    bit = Signal.list.fetch(name) - 1
    set.put_uint8(bit / 8, 1 << (bit % 8))
    sigprocmask(SIG_BLOCK, set, nil)
  end
end
AnyForkServerSignals.block("CHLD")

require_relative "../anyfork"

AnyFork::Child.serve(ENV.delete("ANYFORK_FD"))
