# frozen_string_literal: true

# example.rb: anyfork from Ruby.
#
#   ANYFORK_LIB=target/release/libanyfork.so ruby -Ibindings/ruby/lib bindings/ruby/example.rb
#
# 1. The program prepares some state (a prime sieve), then copies itself
#    into a template with AnyFork.template. Workers forked from that copy
#    run a Ruby method of this program, Sieve.count, with the sieve already
#    in memory: each gets its slice as arguments and answers on its comm
#    socket. The program itself drops its sieve and checks every answer.
# 2. The exec builtin, the faster fork+exec: `sh` runs in a process forked
#    from the small default template, with its stdout sent as an fd and
#    its exit status reported back.
# 3. A failure raises AnyFork::Error with the library's message.
# 4. A pool of Ruby workers (AnyFork::Pool): a block runs in each request's
#    worker, with progress events and an exception sent back to the caller.
#
# Exits 0 when everything came out right.

require "anyfork"

# The state the workers share, built before the template is made.
module Sieve
  LIMIT = 200_000
  @primes = nil

  def self.build
    s = Array.new(LIMIT, true)
    s[0] = s[1] = false
    (2..Integer.sqrt(LIMIT)).each { |i| (i * i).step(LIMIT - 1, i) { |j| s[j] = false } if s[i] }
    @primes = s
  end

  def self.drop = (@primes = nil)

  # Runs in a worker: counts the primes in [lo, hi) and reports them.
  def self.count(io, lo, hi)
    n = @primes[Integer(lo)...Integer(hi)].count(true)
    io.puts "#{lo} #{hi} #{n} #{Process.pid}"
  end

  # The program's own check, without the sieve.
  def self.slow_count(lo, hi)
    (lo...hi).count { |n| n >= 2 && (2..Integer.sqrt(n)).none? { |d| (n % d).zero? } }
  end
end

ok = true

# --- 1. Ruby workers forked from a copy of this program -------------------
Sieve.build
template = AnyFork.template
Sieve.drop # only the template needs it now
puts "template: pid #{template.pid}"

workers = 8
step = Sieve::LIMIT / workers
reports = {}
workers.times do |i|
  lo = i * step
  template.fork.send_arg(lo, lo + step).run("Sieve.count") do |io, err|
    reports[i] = err ? "error: #{err.message}" : io.read
    io&.close
  end
end
AnyFork.wait
workers.times do |i|
  lo, hi, n, pid = reports[i].split
  want = Sieve.slow_count(Integer(lo), Integer(hi))
  ok &&= Integer(n) == want
  puts format("worker %d (pid %s): %5s primes in [%6s, %6s)%s", i, pid, n, lo, hi,
              Integer(n) == want ? "" : " WRONG, expected #{want}")
end
template.free

# --- 2. The exec builtin ---------------------------------------------------
r, w = IO.pipe
sh = AnyFork.new
File.open(File::NULL) { |null| sh.send_io(null) } # its fd 0 (duplicated at once)
sh.send_io(w)                                      # its fd 1
status = nil
sh.on_exit { |_pid, st| status = st }
sh.exec("sh", "-c", 'echo "hello from $0, pid $$"', "sh") { |io| io.close }
w.close
AnyFork.wait
out = r.read
puts "exec: #{out.strip} (#{status.inspect})"
ok &&= out.start_with?("hello from sh") && status.success?

# --- 3. Errors --------------------------------------------------------------
begin
  AnyFork.new.send_io(12_345)
  ok = false
rescue AnyFork::Error => e
  puts "error: #{e.message} (errno #{e.errno})"
end

# --- 4. A pool of Ruby workers ----------------------------------------------
events = []
pool = AnyFork::Pool.new(max: 2, on_event: ->(ev) { events << ev }) do |lo, hi|
  raise ArgumentError, "empty range #{lo}...#{hi}" if hi <= lo

  AnyFork::RPC.event("counting #{lo}...#{hi} in #{Process.pid}")
  Sieve.slow_count(lo, hi)
end
ranges = [[0, 1000], [1000, 2000], [2000, 3000]]
counts = pool.map(ranges)                            # in order; waits
ok &&= counts == ranges.map { |lo, hi| Sieve.slow_count(lo, hi) } && events.size == 3
puts "pool: #{counts.inspect} primes; #{events.size} events"
begin
  pool.call([5, 5])                                  # the worker raised: raised here
  ok = false
rescue ArgumentError => e
  puts "pool: the worker raised #{e.message.inspect}"
end
pool.close                                           # graceful

puts ok ? "example: all good" : "example: something was wrong"
exit(ok ? 0 : 1)
