# frozen_string_literal: true

# gem build anyfork.gemspec && gem install --local anyfork-0.1.0.gem
# (libanyfork itself comes from `make install` in the repository root).

# Where libanyfork is installed, as `pkg-config --variable=libdir anyfork`
# says when the gem is built (PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig for a
# prefix of your own): the gem's metadata keeps it, and AnyFork::Lib tries
# it after ANYFORK_LIB and the loader. Nothing when pkg-config has no
# answer.
libdir =
  begin
    out = IO.popen(%w[pkg-config --variable=libdir anyfork], err: File::NULL, &:read).strip
    out if $?.success? && out.start_with?("/")
  rescue SystemCallError
    nil
  end

Gem::Specification.new do |s|
  s.name = "anyfork"
  s.version = "0.1.0"
  s.summary = "Create processes without forking the Ruby interpreter (libanyfork through ffi)"
  s.description = "A small template server forks new processes on request, so a big " \
                  "Ruby program never forks itself; Ruby methods run in the children."
  s.authors = ["anyfork developers"]
  s.license = "MIT OR Apache-2.0"
  s.required_ruby_version = ">= 3.0"
  s.files = Dir.chdir(__dir__) { Dir["lib/**/*.rb"] + ["README.md"] }
  s.require_paths = ["lib"]
  s.add_runtime_dependency "ffi", ">= 1.15"
  s.metadata["anyfork_libdir"] = libdir if libdir
end
