# frozen_string_literal: true

# Ruby's own fork against anyfork, side by side in one run.
#
#   ANYFORK_LIB=target/release ruby -I bindings/ruby/lib \
#       bindings/ruby/bench/fork_bench.rb [--n 200] [--reps 5] [--grow-mb 1024] \
#       [--warm 2] [--json out.json]
#
# Each creation makes a process that ends at once, and the caller waits for
# its end before making the next:
#
# - fork: Kernel#fork { exit! } and Process.wait;
# - anyfork: template.fork.run("ForkBench.noop") on a template of this
#   program without a warm pool (AnyFork.template(warm: 0, ahead: 0), made
#   once at the plain size), reading the socket to EOF;
# - anyfork, warm pool: the same on a second template that keeps --warm
#   children forked and waiting (AnyFork.template(warm: K, ahead: 0));
# - anyfork, default: a third template made as AnyFork.template makes it by
#   default (a warm pool of 2, and 2 processes forked ahead here).
#
# Every repetition runs each method --n times, the methods taking turns
# (the order rotates); the table gives the median of --reps repetitions
# with min-max for the rate and the p50 latency, and the ratios to fork
# taken repetition by repetition. Then the program grows to --grow-mb of
# touched memory and does it all again; the templates stay as they were
# made, small, as a program would make them at its start. --json writes
# the figures for tools/bench_chart.py.

require "json"
require "optparse"
require "etc"
require "anyfork"

# What every child runs: nothing.
module ForkBench
  def self.noop(_io, *_args) = 0
end

opt = { n: 200, reps: 5, warmup: 20, grow_mb: 1024, warm: 2, json: nil }
OptionParser.new do |o|
  o.banner = "usage: #{$PROGRAM_NAME} [options]"
  o.on("--n N", Integer, "creations per method and repetition") { |v| opt[:n] = v }
  o.on("--reps R", Integer) { |v| opt[:reps] = v }
  o.on("--warmup N", Integer) { |v| opt[:warmup] = v }
  o.on("--grow-mb MB", Integer, "0: the plain size only") { |v| opt[:grow_mb] = v }
  o.on("--warm K", Integer, "the warm pool's size") { |v| opt[:warm] = v }
  o.on("--json PATH", "write the figures here too") { |v| opt[:json] = v }
end.parse!
if opt[:n] < 1 || opt[:reps] < 1 || opt[:grow_mb].negative? || !(1..64).cover?(opt[:warm])
  abort "#{$PROGRAM_NAME}: --n and --reps must be at least 1, --grow-mb at least 0, --warm 1 to 64"
end

def loadavg = File.read("/proc/loadavg").split.first(3).map(&:to_f)

def rss_bytes
  File.foreach("/proc/self/status") { |l| return l.split[1].to_i * 1024 if l.start_with?("VmRSS:") }
  0
end

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def to_eof(io)
  got = io.read
  raise "the child wrote #{got.inspect}" unless got.empty?
ensure
  io.close
end

load0 = loadavg
tmpl = AnyFork.template(warm: 0, ahead: 0)
warm = AnyFork.template(warm: opt[:warm], ahead: 0)
default = AnyFork.template
METHODS = [
  ["own", "fork { exit! } + Process.wait", lambda {
    pid = fork { exit!(0) }
    _, st = Process.wait2(pid)
    raise "fork child: #{st.inspect}" unless st.success?
  }],
  ["anyfork", "anyfork template(warm: 0, ahead: 0).fork.run", -> { to_eof(tmpl.fork.run("ForkBench.noop")) }],
  ["anyfork_warm", "anyfork template(warm: #{opt[:warm]}, ahead: 0).fork.run",
   -> { to_eof(warm.fork.run("ForkBench.noop")) }],
  ["anyfork_default", "anyfork template.fork.run (warm: 2, ahead: 2)",
   -> { to_eof(default.fork.run("ForkBench.noop")) }]
].freeze

def round_of(func, n)
  lat = []
  t0 = now
  n.times do
    t = now
    func.call
    lat << now - t
  end
  total = now - t0
  lat.sort!
  [n / total, lat[lat.size / 2] * 1000]
end

def median(v)
  s = v.sort
  s.size.odd? ? s[s.size / 2] : (s[s.size / 2 - 1] + s[s.size / 2]) / 2.0
end

def span(v) = { "median" => median(v), "min" => v.min, "max" => v.max }

def measure(label, opt)
  METHODS.each { |_, _, f| opt[:warmup].times { f.call } }
  got = Hash.new { |h, k| h[k] = [] }
  opt[:reps].times do |rep|
    k = rep % METHODS.size
    (METHODS.drop(k) + METHODS.take(k)).each { |key, _, f| got[key] << round_of(f, opt[:n]) }
    warn "#{label}: repetition #{rep + 1} of #{opt[:reps]}"
  end
  size = { "label" => label, "rss_bytes" => rss_bytes, "methods" => {}, "ratios" => {} }
  METHODS.each do |key, name, _|
    size["methods"][key] = { "name" => name, "rate_per_s" => span(got[key].map(&:first)),
                             "p50_ms" => span(got[key].map(&:last)) }
    next if key == "own"

    size["ratios"]["#{key}_over_own"] = span(got[key].zip(got["own"]).map { |a, b| a[0] / b[0] })
  end
  size
end

def fmt(s, f) = "#{format(f, s["median"])} (#{format(f, s["min"])}–#{format(f, s["max"])})"

sizes = [measure("plain", opt)]
if opt[:grow_mb].positive?
  # Touched memory: every page is this process's, as in a grown program.
  ballast = "\x01".b * (opt[:grow_mb] << 20)
  sizes << measure("grown", opt)
  ballast.clear
end
tmpl.free
warm.free
default.free
load1 = loadavg
result = {
  "language" => "ruby", "own_fork" => "fork", "interpreter" => "Ruby #{RUBY_VERSION}",
  "date" => Time.now.utc.strftime("%Y-%m-%d %H:%M UTC"), "n" => opt[:n], "repetitions" => opt[:reps],
  "load_average" => { "start" => load0, "end" => load1 }, "cpus" => Etc.nprocessors, "sizes" => sizes
}
puts "Ruby's own fork against anyfork (#{result["interpreter"]}, #{result["date"]}), #{opt[:n]} creations " \
     "per repetition, median of #{opt[:reps]} repetitions (min–max), interleaved; load average " \
     "#{format("%.1f", load0[0])} at the start, #{format("%.1f", load1[0])} at the end (#{result["cpus"]} CPUs)"
puts
puts "| method | caller | creations/s | × fork | p50 ms |"
puts "|---|---|---|---|---|"
sizes.each do |s|
  where = "#{s["label"]} (#{s["rss_bytes"] >> 20} MB)"
  s["methods"].each do |key, m|
    r = s["ratios"]["#{key}_over_own"]
    puts "| #{m["name"]} | #{where} | #{fmt(m["rate_per_s"], "%.0f")} | #{r ? fmt(r, "%.2f") : "1"} | " \
         "#{fmt(m["p50_ms"], "%.2f")} |"
  end
end
if opt[:json]
  File.write("#{opt[:json]}.tmp", JSON.pretty_generate(result))
  File.rename("#{opt[:json]}.tmp", opt[:json])
end
