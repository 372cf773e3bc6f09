# Render one of the Open OnDemand app's ERB files (ood/) the way the dashboard does, for the
# tests: ruby ood_render.rb KIND FILE < values.json, the rendered text on stdout. An exception
# raised by the template (a form value refused) exits 1 with its message on stderr, as the
# dashboard shows it instead of launching.
#
# KIND says which objects the file sees, as in OnDemand:
#   submit    submit.yml.erb: the form's attributes as methods of the binding's self
#   template  template/*.erb: `context` (the form's attributes as methods) and `session`
#   view      view.html.erb: connection.yml's values (host, port, password) as methods
require "erb"
require "json"
require "ostruct"

kind, path = ARGV
abort "usage: ood_render.rb submit|template|view FILE < values.json" unless path
values = JSON.parse($stdin.read)

# The dashboard's values: every form attribute is a String (a number field too).
FormContext = Struct.new(*values.keys.map(&:to_sym), keyword_init: true) unless values.empty?

def form(values)
  values.empty? ? Object.new : FormContext.new(**values.transform_keys(&:to_sym))
end

# What template/*.erb files see: the locals `context` and `session`.
def template_binding(context, session)
  binding
end

template = ERB.new(File.read(path), trim_mode: "-")
template.filename = path
begin
  text = case kind
         when "submit"
           form(values).instance_eval { binding }
         when "template"
           template_binding(form(values),
                            OpenStruct.new(id: "00000000-test", staged_root: Dir.pwd))
         when "view"
           OpenStruct.new(values).instance_eval { binding }
         else
           abort "unknown kind #{kind.inspect}"
         end.then { |scope| template.result(scope) }
rescue StandardError => e
  warn "#{e.class}: #{e.message}"
  exit 1
end
$stdout.write(text)
