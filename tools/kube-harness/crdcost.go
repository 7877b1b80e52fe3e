package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

// crdCost validates every CustomResourceDefinition in a YAML file with the API server's own
// validation (what `kubectl apply` of a CRD runs, static CEL cost estimation included) and
// prints each x-kubernetes-validations rule's estimated cost next to the limits, as TSV:
//
//	cost <TAB> limit <TAB> path <TAB> rule
//
// It exits 1 when the API server would refuse the CRD.
func crdCost(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: kube-harness crd-cost FILE")
		return 2
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	crds, err := readCRDs(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if len(crds) == 0 {
		fmt.Fprintf(os.Stderr, "%s: no CustomResourceDefinition\n", args[0])
		return 1
	}
	failed := false
	fmt.Printf("cost\tlimit\tpath\trule\n")
	for _, crd := range crds {
		if errs := validation.ValidateCustomResourceDefinition(context.Background(), crd); len(errs) > 0 {
			failed = true
			for _, e := range errs {
				fmt.Fprintf(os.Stderr, "%s: %s\n", crd.Name, e.Error())
			}
		}
		// The internal form keeps a schema shared by every version at the top.
		schemas := map[string]*apiextensions.CustomResourceValidation{}
		if crd.Spec.Validation != nil {
			schemas["all versions"] = crd.Spec.Validation
		}
		for _, v := range crd.Spec.Versions {
			if v.Schema != nil {
				schemas[v.Name] = v.Schema
			}
		}
		for version, schema := range schemas {
			if schema.OpenAPIV3Schema == nil {
				continue
			}
			root := schema.OpenAPIV3Schema
			var total uint64
			walk(root, validation.RootCELContext(root), "openAPIV3Schema", func(path, rule string, cost uint64) {
				total = saturatingAdd(total, cost)
				fmt.Printf("%d\t%d\t%s\t%s\n", cost, uint64(validation.StaticEstimatedCostLimit), path, oneLine(rule))
			})
			fmt.Printf("%d\t%d\t%s (%s) total\t\n", total, uint64(validation.StaticEstimatedCRDCostLimit), crd.Name, version)
		}
	}
	if failed {
		return 1
	}
	return 0
}

func readCRDs(data []byte) ([]*apiextensions.CustomResourceDefinition, error) {
	var out []*apiextensions.CustomResourceDefinition
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, err
		}
		if meta.Kind != "CustomResourceDefinition" {
			continue
		}
		var v1 apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(doc, &v1); err != nil {
			return nil, err
		}
		// The API server defaults a v1 CRD, then validates its internal form.
		apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1)
		internal := &apiextensions.CustomResourceDefinition{}
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, internal, nil); err != nil {
			return nil, err
		}
		out = append(out, internal)
	}
}

// walk visits every schema node with x-kubernetes-validations, building the same CEL
// schema contexts the API server's validation builds, so that cardinality (how many times
// a rule can run under unbounded lists and maps) multiplies each rule's cost as it does there.
func walk(s *apiextensions.JSONSchemaProps, ctx *validation.CELSchemaContext, path string, visit func(path, rule string, cost uint64)) {
	if len(s.XValidations) > 0 {
		info, err := ctx.TypeInfo()
		if err != nil || info == nil {
			visit(path, fmt.Sprintf("(no type information: %v)", err), 0)
		} else {
			envSet := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion(), true)
			results, err := cel.Compile(info.Schema, info.DeclType, celconfig.PerCallLimit, envSet, cel.NewExpressionsEnvLoader())
			if err != nil {
				visit(path, "(compile error: "+err.Error()+")", 0)
			}
			for i, r := range results {
				cardinality := r.MaxCardinality
				if ctx.MaxCardinality != nil {
					cardinality = *ctx.MaxCardinality
				}
				rule := s.XValidations[i].Rule
				if r.Error != nil {
					rule += "  (error: " + r.Error.Error() + ")"
				}
				visit(fmt.Sprintf("%s.x-kubernetes-validations[%d]", path, i), rule, saturatingMul(r.MaxCost, cardinality))
			}
		}
	}
	names := make([]string, 0, len(s.Properties))
	for name := range s.Properties {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		prop := s.Properties[name]
		walk(&prop, ctx.ChildPropertyContext(&prop, name), path+".properties["+name+"]", visit)
	}
	if s.Items != nil && s.Items.Schema != nil {
		walk(s.Items.Schema, ctx.ChildItemsContext(s.Items.Schema), path+".items", visit)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		walk(s.AdditionalProperties.Schema, ctx.ChildAdditionalPropertiesContext(s.AdditionalProperties.Schema), path+".additionalProperties", visit)
	}
}

func saturatingMul(a, b uint64) uint64 {
	if a != 0 && b > ^uint64(0)/a {
		return ^uint64(0)
	}
	return a * b
}

func saturatingAdd(a, b uint64) uint64 {
	if a > ^uint64(0)-b {
		return ^uint64(0)
	}
	return a + b
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
