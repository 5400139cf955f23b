// The kernel table and kernel selection, for `pyquant info`, the tests and the benchmarks.
#include <pybind11/stl.h>

#include "bindings/array_utils.h"
#include "core/kernel_table.h"

namespace pq {
namespace {

std::vector<std::string> feature_names(FeatureMask mask) {
  std::vector<std::string> out;
  for (int i = 0; i < static_cast<int>(Feature::count); ++i)
    if (mask & feature_bit(static_cast<Feature>(i))) out.push_back(feature_name(static_cast<Feature>(i)));
  return out;
}

KernelFamily parse_family(const std::string& name) {
  for (size_t f = 0; f < kNumFamilies; ++f)
    if (name == family_name(static_cast<KernelFamily>(f))) return static_cast<KernelFamily>(f);
  std::string known;
  for (size_t f = 0; f < kNumFamilies; ++f)
    known += std::string(f ? ", " : "") + family_name(static_cast<KernelFamily>(f));
  throw std::invalid_argument("family: unknown kernel family '" + name + "' (expected " + known + ")");
}

FeatureMask parse_features(const std::vector<std::string>& names) {
  FeatureMask mask = 0;
  for (const std::string& n : names) {
    Feature f;
    require(parse_feature(n, &f), "features: unknown CPU feature '" + n + "'");
    mask |= feature_bit(f);
  }
  return mask;
}

Isa parse_tier(const std::string& name) {
  Isa isa;
  require(parse_isa(name, &isa),
          "isa: unknown path '" + name + "' (expected scalar, avx2, avx512 or neon)");
  return isa;
}

py::list kernel_table_list() {
  const FeatureMask cpu = cpu_features().mask;
  const Isa active = active_isa();
  py::list out;
  for (const KernelEntry& e : kernel_table()) {
    py::dict d;
    d["family"] = family_name(e.family);
    d["name"] = e.name;
    d["tier"] = isa_name(e.tier);
    d["features"] = feature_names(e.features);
    d["missing"] = feature_names(e.features & ~cpu);  // what this CPU lacks to run it
    d["mr"] = e.mr;
    d["nr"] = e.nr;
    d["verified"] = verified_name(e.verified);
    d["description"] = e.description;
    d["preferred_vendor"] =
        e.preferred_vendor ? py::object(py::str(e.preferred_vendor)) : py::none();
    d["slower_on"] = e.slower_vendor ? py::object(py::make_tuple(e.slower_vendor, e.slower_family))
                                     : py::none();
    d["built"] = e.built;
    d["supported"] = e.built && (cpu & e.features) == e.features;  // runnable here (any tier)
    d["selected"] = &active_kernel(e.family, active) == &e;
    out.append(d);
  }
  return out;
}

// Pure: the kernels each family would use, best first, for a CPU with `features` (None: this
// CPU) of `vendor` and x86 `family` (None: this CPU's when features is None, else none) under
// tier `isa` (None: the active one); any_build: as if this build held every architecture's
// kernels.
py::dict select_kernels_dict(const std::optional<std::vector<std::string>>& features,
                             const std::optional<std::string>& isa, bool any_build,
                             const std::optional<std::string>& vendor,
                             const std::optional<unsigned>& family) {
  const FeatureMask mask = features ? parse_features(*features) : cpu_features().mask;
  const Isa ceiling = isa ? parse_tier(*isa) : active_isa();
  const std::string cpu_vendor = vendor ? *vendor : features ? "" : cpu_features().vendor;
  const unsigned cpu_family = family ? *family : features ? 0 : cpu_features().family;
  py::dict out;
  for (size_t f = 0; f < kNumFamilies; ++f) {
    std::vector<std::string> names;
    for (const KernelEntry* e :
         select_kernels(static_cast<KernelFamily>(f), mask, ceiling, cpu_vendor, cpu_family,
                        !any_build))
      names.push_back(e->name);
    out[family_name(static_cast<KernelFamily>(f))] = names;
  }
  return out;
}

void set_kernel(const std::string& family, const std::optional<std::string>& name) {
  const KernelFamily f = parse_family(family);
  if (!name) {
    force_kernel(f, nullptr);
    return;
  }
  for (const KernelEntry& e : kernel_table()) {
    if (e.family != f || *name != e.name) continue;
    require(e.built, "name: kernel '" + *name + "' is not compiled into this build (it is " +
                         isa_name(e.tier) + " code)");
    const FeatureMask missing = e.features & ~cpu_features().mask;
    if (missing) {
      std::string needs;
      for (const std::string& n : feature_names(missing)) needs += (needs.empty() ? "" : ", ") + n;
      throw std::invalid_argument("name: this CPU cannot run kernel '" + *name + "' (needs " +
                                  needs + ")");
    }
    force_kernel(f, &e);
    return;
  }
  throw std::invalid_argument("name: no " + family + " kernel named '" + *name + "'");
}

py::dict cpu_features_dict() {
  const CpuFeatures& f = cpu_features();
  py::dict d;
  d["vendor"] = f.vendor;
  d["brand"] = f.brand;
  d["family"] = f.family;
  for (int i = 0; i < static_cast<int>(Feature::count); ++i)
    d[feature_name(static_cast<Feature>(i))] = f.has(static_cast<Feature>(i));
  d["os_avx"] = f.os_avx;
  d["os_avx512"] = f.os_avx512;
  return d;
}

}  // namespace

void bind_kernels(py::module_& m) {
  // Dispatch once, at import: CPU detection and every family's kernel per tier.
  for (size_t f = 0; f < kNumFamilies; ++f) active_kernel(static_cast<KernelFamily>(f), active_isa());
  m.def("cpu_features", &cpu_features_dict);
  m.def("kernel_table", &kernel_table_list,
        "Every micro-kernel variant: family, name, tier, required features, tile, verification, "
        "whether this build has it, this CPU runs it and dispatch selected it.");
  m.def("select_kernels", &select_kernels_dict, py::arg("features") = py::none(),
        py::arg("isa") = py::none(), py::arg("any_build") = false, py::arg("vendor") = py::none(),
        py::arg("family") = py::none(),
        "Pure dispatch: per family, the kernels (best first) for a feature set (and CPU vendor "
        "and x86 family) under a tier.");
  m.def("set_kernel", &set_kernel, py::arg("family"), py::arg("name"),
        "Force one family onto a kernel this CPU runs, whatever the tier (None: back to "
        "dispatch). Internal: tests and benchmarks.");
  m.def("active_kernel", [](const std::string& family) {
    return std::string(active_kernel(parse_family(family), active_isa()).name);
  }, py::arg("family"));
}

}  // namespace pq
